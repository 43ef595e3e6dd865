//! The shared store (`store.kind: redis`): several gateway replicas, one exact pool.
//!
//! Every change to a pool is one call of `redis/seats.lua` (EVALSHA, reloaded by the client on
//! NOSCRIPT), which first drops expired seats and then decides, so admission is one atomic step
//! however many replicas race. Time is Redis `TIME`, never a gateway clock; the `now` the trait
//! passes in is ignored here (tests may pin it: `use_caller_clock`). Each pool's keys share the
//! hash tag `{prefix:product:pool}`, so a pool lives in one slot of a Redis Cluster.
//!
//! One cookie, one session across the pools of a product: a script sees one pool only, so a
//! commit (or exempt admission, or rekey) first asks the product's other pools whether the
//! cookie leads to a live session there, and afterwards tells them to forget its old releases.
//! That is a read before the write, not one atomic step: two pools committing one cookie in
//! the same instant could both take it (within a pool it is atomic).
//!
//! What stays local (and is therefore approximate, by at most the stated lag):
//! * the session → seat cache: a request whose seat was verified less than [`CACHE_TTL`] ago
//!   (and is not past the deadline it was verified with) is admitted without a round trip; its activity is queued and written by `flush` (every
//!   `store.flush_interval`). A session ended or logged out on another replica is seen here
//!   within [`CACHE_TTL`]. A late flush never revives a seat: the script only refreshes seats
//!   that still hold.
//! * the pool view behind `available()` (checks, `last_known` logins), refreshed every
//!   [`VIEW_EVERY`]. A view older than [`STALE_AFTER`] (the store stopped answering) is no
//!   answer: `available()` is `None`, so the gateway follows `on_store_error`.
//!
//! The waiting line (issue 12) is one line per pool for every replica, kept in the pool's slot
//! beside its seats, so a join, a promotion and the admission it races are decided in one script
//! call: barging off, every reservation (and the sweep) first holds free seats for the head of
//! the line, then refuses newcomers while tickets wait. A ready ticket's seat is a reservation
//! under the ticket's lease id, counted like any other by every replica. What a call did to the
//! line comes back in its answer and is told to this replica's observer only, once, as its
//! releases are. `wait_estimate` reads the pool view (which brings the earliest seat deadlines
//! and the last hour's releases) without a round trip; a poll is one.
//!
//! Connection: the client is built at start (bad URLs fail then) but connects on first use,
//! inside pingora's runtimes: a connection made on the short-lived runtime that opens the
//! ledger would die with it. A failed connect is retried at most every [`RECONNECT_BACKOFF`].
//!
//! Layout: `conn` (clients, connecting, health), `scripts` (the Lua sources and one call of
//! them), `wire` (the strict codec of their answers), `cache` (the session cache and
//! verification), `view` (the pool view and the listings).

use super::{LedgerError, LedgerObserver, SeatLedger, Shared, SharedState};
use crate::domain::{
    now_ms, Claim, EndOutcome, Full, FullReason, Gone, Joined, Lease, Lookup, Millis, PauseOutcome,
    Polled, PoolKey, PoolSpec, PoolUsage, QueueEvent, QueueResult, QueueStatus, RedisConfig,
    RedisTarget, ReleaseReason, Reservation, SeatId, SeatRecord, SeatState, SeatsPer, SessionKey,
    Ticket, TicketKey, TicketState, Touch, MIN_POLL_INTERVAL,
};
use crate::policy::queue::{estimate, estimate_at};
use crate::policy::seat::{deadline, expiry, SeatTimes};
use async_trait::async_trait;
use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

mod cache;
mod conn;
mod scripts;
mod view;
mod wire;

#[cfg(test)]
mod tests;

use cache::*;
use conn::*;
use scripts::*;
use view::*;
use wire::*;

/// How long a verified session is trusted without asking Redis again. This bounds how late a
/// replica notices a session ended elsewhere.
pub const CACHE_TTL: Duration = Duration::from_millis(1000);
/// How often the pool view behind `available()` is refreshed.
pub const VIEW_EVERY: Duration = Duration::from_millis(500);
/// A pool view older than this is not used: two refreshes failed, the store is down.
pub const STALE_AFTER: Duration = Duration::from_millis(2 * VIEW_EVERY.as_millis() as u64);
/// Every Redis call gives up after this: a store that hangs counts as down.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

struct Pool {
    spec: PoolSpec,
    spec_json: String,
    keys: Vec<String>,
}

struct Inner {
    target: &'static str,
    clients: Clients,
    script: redis::Script,
    once: redis::Script,
    swap: redis::Script,
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    failed_at: Mutex<Option<Instant>>,
    prefix: String,
    pools: super::Pools<Pool>,
    cache: DashMap<SessionKey, Cached>,
    /// Activity seen from cache hits, written by `flush`: seat → (pool, when).
    activity: DashMap<SeatId, (PoolKey, Stamp)>,
    /// Requests that were not activity (`touch_as(.., false)`) seen from cache hits, written
    /// by `flush` as `last_request` only.
    requests: DashMap<SeatId, (PoolKey, Stamp)>,
    views: DashMap<PoolKey, View>,
    refresher: AtomicBool,
    observer: Arc<dyn LedgerObserver>,
    health: Mutex<Health>,
    /// Test hooks: ms added to Redis `TIME`, or each call's own `now` used instead of it.
    clock_offset: AtomicI64,
    caller_clock: AtomicBool,
    caller_now: AtomicU64,
}

pub struct RedisLedger {
    inner: Arc<Inner>,
}

impl RedisLedger {
    /// Test hook: `ms` is added to Redis `TIME` in every script call (steps the store's clock).
    #[doc(hidden)]
    pub fn set_clock_offset_ms(&self, ms: i64) {
        self.inner.clock_offset.store(ms, Ordering::Release);
    }

    /// Test hook: scripts use the `now` each trait call is given instead of Redis `TIME`, so a
    /// test drives this store's time exactly as the memory store's. The session cache and
    /// the age of batched activity then follow that clock too.
    #[doc(hidden)]
    pub fn use_caller_clock(&self, on: bool) {
        self.inner.caller_clock.store(on, Ordering::Release);
    }
}

impl Inner {
    fn pool(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        super::pool_in(&self.pools, key)
    }

    /// Records a trait call's `now` for the caller-clock test hook.
    fn at(&self, now: Millis) {
        if self.caller_clock.load(Ordering::Relaxed) {
            self.caller_now.store(now, Ordering::Relaxed);
        }
    }

    /// Whether Redis time is offset from this gateway's (the session cache, whose freshness is
    /// this gateway's time, is then bypassed).
    fn offset_clock(&self) -> bool {
        self.clock_offset.load(Ordering::Relaxed) != 0
    }

    /// Other pools of the product of `pool`: a session of that product may be held there.
    fn sibling_pools(&self, pool: &PoolKey) -> Vec<Arc<Pool>> {
        self.all_pools()
            .into_iter()
            .filter(|p| p.spec.key.product == pool.product && p.spec.key != *pool)
            .collect()
    }

    /// `session` is live in `pool` now: other pools of the product forget its old releases.
    async fn forget_elsewhere(self: &Arc<Self>, session: &SessionKey, pool: &PoolKey) {
        let hex = session.hex();
        for p in self.sibling_pools(pool) {
            if let Err(e) = self.call(&p, "forget", std::slice::from_ref(&hex)).await {
                log::debug!("forget {session:?} in {}: {e}", p.spec.key);
            }
        }
    }

    /// The live session `session` leads to in another pool than `pool`, if any. Pools live in
    /// separate cluster slots, so this is a read before the write, not one atomic step: two
    /// pools racing to commit one cookie in the same instant can still both take it.
    async fn held_elsewhere(
        self: &Arc<Self>,
        session: &SessionKey,
        pool: &PoolKey,
    ) -> Result<Option<SeatId>, LedgerError> {
        let hex = session.hex();
        for p in self.sibling_pools(pool) {
            let a = self.call(&p, "has", std::slice::from_ref(&hex)).await?;
            if let Some(id) = a.id {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn all_pools(&self) -> Vec<Arc<Pool>> {
        super::pools_by_key(&self.pools)
    }
}

impl RedisLedger {
    /// `reserve` with the reservation's lifetime given (`None`: the pool's standby timeout).
    async fn reserve_for(
        &self,
        claim: &Claim,
        ttl: Option<Millis>,
    ) -> Result<Reservation, LedgerError> {
        let pool = self
            .inner
            .pool(&claim.pool)
            .ok_or_else(|| LedgerError::UnknownPool(claim.pool.clone()))?;
        let args = [
            format!("{:x}", claim.lease_id),
            claim.user.clone().unwrap_or_default(),
            claim.device.clone().unwrap_or_default(),
            ttl.map(|t| t.to_string()).unwrap_or_default(),
        ];
        let a = self.inner.call(&pool, "reserve", &args).await?;
        match a.kind {
            Kind::Granted => Ok(Reservation::Granted(Lease {
                id: claim.lease_id,
                pool: claim.pool.clone(),
                reuse: a.reuse,
                overflow: a.overflow,
            })),
            Kind::Full => Ok(Reservation::Full(Full {
                in_use: a.in_use as u32,
                capacity: a.capacity as u32,
                reason: parse_full(a.reason.as_deref())?,
            })),
            k => Err(corrupt(format!("unexpected answer {k:?} to reserve"))),
        }
    }
}

#[async_trait]
impl SeatLedger for RedisLedger {
    fn configure(&self, pools: &[PoolSpec]) {
        let mut map = self.inner.pools.write().unwrap_or_else(|e| e.into_inner());
        for spec in pools {
            let pool = Pool {
                spec: spec.clone(),
                spec_json: spec_json(spec),
                keys: pool_keys(&self.inner.prefix, &spec.key),
            };
            map.insert(spec.key.clone(), Arc::new(pool));
        }
    }

    async fn reserve(&self, claim: &Claim, now: Millis) -> Result<Reservation, LedgerError> {
        self.inner.at(now);
        self.reserve_for(claim, None).await
    }

    async fn hold(
        &self,
        claim: &Claim,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Reservation, LedgerError> {
        self.inner.at(now);
        self.reserve_for(claim, Some(ttl_ms)).await
    }

    /// A cookie that already leads to a live session (any state, this pool or another of the
    /// product) keeps it: the lease is dropped and that session's id returned.
    async fn commit(
        &self,
        lease: &Lease,
        claim: &Claim,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError> {
        self.inner.at(now);
        let pool = self
            .inner
            .pool(&lease.pool)
            .ok_or_else(|| LedgerError::UnknownPool(lease.pool.clone()))?;
        if let Some(id) = self.inner.held_elsewhere(&session, &lease.pool).await? {
            self.cancel(lease).await;
            return Ok(id);
        }
        let args = [
            format!("{:x}", lease.id),
            lease.reuse.map(|r| r.to_string()).unwrap_or_default(),
            claim.user.clone().unwrap_or_default(),
            claim.device.clone().unwrap_or_default(),
            claim.client.clone(),
            session.hex(),
            SeatId::random().to_string(),
        ];
        let a = self.inner.call(&pool, "commit", &args).await?;
        self.inner.cache.remove(&session);
        if let Some(old) = parse_session(a.replaced.as_deref().unwrap_or_default())? {
            self.inner.cache.remove(&old);
        }
        match (a.kind, a.id) {
            (Kind::Seat, Some(id)) => {
                self.inner.forget_elsewhere(&session, &lease.pool).await;
                Ok(id)
            }
            (Kind::Lost, _) => Err(LedgerError::LeaseLost(lease.id)),
            (k, _) => Err(corrupt(format!("unexpected answer {k:?} to commit"))),
        }
    }

    async fn cancel(&self, lease: &Lease) {
        let Some(pool) = self.inner.pool(&lease.pool) else {
            return;
        };
        if let Err(e) = self
            .inner
            .call(&pool, "cancel", &[format!("{:x}", lease.id)])
            .await
        {
            // The lease expires by itself after `standby_timeout`.
            log::debug!("cancel of lease {:x} failed: {e}", lease.id);
        }
    }

    async fn touch_as(
        &self,
        session: &SessionKey,
        activity: bool,
        now: Millis,
    ) -> Result<Touch, LedgerError> {
        self.inner.at(now);
        let hit = self.inner.cache.get(session).and_then(|c| {
            let state = c.seat.state;
            let fresh = self.inner.since(c.checked) < CACHE_TTL
                && !self.inner.offset_clock()
                && matches!(
                    state,
                    SeatState::Active | SeatState::Ending | SeatState::Exempt | SeatState::Named
                )
                && self.inner.wall_ms() < c.deadline
                // Verified by a request that was not activity: activity now is written by a
                // verify, so the store has it as of now, like the memory store.
                && (!activity || c.seat.last_activity >= c.seat.last_request);
            fresh.then(|| (c.pool.clone(), c.seat.clone()))
        });
        if let Some((pool, seat)) = hit {
            let queue = if activity {
                &self.inner.activity
            } else {
                &self.inner.requests
            };
            let t = Inner::held(&pool, &seat);
            queue.insert(seat.id, (pool, self.inner.stamp()));
            return Ok(t);
        }
        self.inner.verify(session, activity).await
    }

    /// The answer's `last_activity` also counts activity queued here and not yet flushed.
    async fn beat(
        &self,
        session: &SessionKey,
        input: bool,
        now: Millis,
    ) -> Result<Option<Millis>, LedgerError> {
        self.inner.at(now);
        let args = [session.hex(), if input { "1" } else { "0" }.to_string()];
        for pool in self.inner.pools_for(session) {
            let a = self.inner.call(&pool, "heartbeat", &args).await?;
            if let (Kind::Held, Some(seat)) = (a.kind, a.seat.as_ref()) {
                let queued = self.inner.activity.get(&seat.id).map_or(0, |e| e.1.ms);
                return Ok(Some(seat.last_activity.max(queued)));
            }
        }
        Ok(None)
    }

    async fn release(
        &self,
        session: &SessionKey,
        reason: ReleaseReason,
        now: Millis,
    ) -> Result<Option<SeatRecord>, LedgerError> {
        self.inner.at(now);
        let args = [session.hex(), reason.as_str().to_string()];
        let pools = self.inner.pools_for(session);
        self.inner.cache.remove(session);
        for pool in pools {
            let a = self.inner.call(&pool, "release", &args).await?;
            if let Some(seat) = &a.seat {
                return seat.record(&pool.spec.key).map(Some);
            }
        }
        Ok(None)
    }

    async fn end(
        &self,
        ids: &[SeatId],
        grace_ms: Millis,
        by: &str,
        now: Millis,
    ) -> Result<Vec<(SeatId, EndOutcome)>, LedgerError> {
        self.inner.at(now);
        let mut best: HashMap<SeatId, EndOutcome> =
            ids.iter().map(|id| (*id, EndOutcome::NotFound)).collect();
        let mut args = vec![grace_ms.to_string(), by.to_string()];
        args.extend(ids.iter().map(|id| id.to_string()));
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, "end", &args).await?;
            for EndOut(id, what, at) in a.out {
                let o = match what {
                    EndWhat::Ending => EndOutcome::Ending { at },
                    EndWhat::AlreadyEnded => EndOutcome::AlreadyEnded,
                    EndWhat::NotFound => continue,
                };
                let slot = best.entry(id).or_insert(EndOutcome::NotFound);
                if !matches!(slot, EndOutcome::Ending { .. }) {
                    *slot = o;
                }
            }
        }
        // Other replicas notice within CACHE_TTL; this one at once.
        let ended: Vec<SeatId> = best
            .iter()
            .filter(|(_, o)| matches!(o, EndOutcome::Ending { .. }))
            .map(|(id, _)| *id)
            .collect();
        self.inner.cache.retain(|_, c| !ended.contains(&c.seat.id));
        Ok(ids
            .iter()
            .map(|id| (*id, best.get(id).copied().unwrap_or(EndOutcome::NotFound)))
            .collect())
    }

    async fn pause(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        self.inner.at(now);
        self.pause_or_resume("pause", id).await
    }

    async fn resume(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError> {
        self.inner.at(now);
        self.pause_or_resume("resume", id).await
    }

    async fn admit_uncounted(
        &self,
        claim: &Claim,
        state: SeatState,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError> {
        self.inner.at(now);
        if !state.uncounted() {
            return Err(LedgerError::Unavailable(format!(
                "admit_uncounted with state {}",
                state.as_str()
            )));
        }
        let pool = self
            .inner
            .pool(&claim.pool)
            .ok_or_else(|| LedgerError::UnknownPool(claim.pool.clone()))?;
        if let Some(id) = self.inner.held_elsewhere(&session, &claim.pool).await? {
            return Ok(id);
        }
        let args = [
            session.hex(),
            claim.user.clone().unwrap_or_default(),
            claim.device.clone().unwrap_or_default(),
            claim.client.clone(),
            SeatId::random().to_string(),
            state.as_str().to_string(),
        ];
        let a = self.inner.call(&pool, "uncounted", &args).await?;
        self.inner.cache.remove(&session);
        self.inner.forget_elsewhere(&session, &claim.pool).await;
        a.id.ok_or_else(|| corrupt("no id from uncounted"))
    }

    /// When `new` already leads to a live session of its own, that one stays and the seat of
    /// `old` is released (`Replaced`): the answer is then the id of `new`'s session. Within a
    /// pool this is one script call; across pools, a read and then the release.
    async fn rekey(
        &self,
        old: &SessionKey,
        new: SessionKey,
        now: Millis,
    ) -> Result<Option<SeatId>, LedgerError> {
        self.inner.at(now);
        let pools = self.inner.pools_for(old);
        self.inner.cache.remove(old);
        self.inner.cache.remove(&new);
        let args = [old.hex(), new.hex()];
        for pool in pools {
            if *old != new {
                if let Some(other) = self.inner.held_elsewhere(&new, &pool.spec.key).await? {
                    let a = self
                        .inner
                        .call(&pool, "release", &[old.hex(), "replaced".into()])
                        .await?;
                    if a.kind == Kind::Released {
                        return Ok(Some(other));
                    }
                    continue;
                }
            }
            let a = self.inner.call(&pool, "rekey", &args).await?;
            if let Some(id) = a.id {
                self.inner.forget_elsewhere(&new, &pool.spec.key).await;
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    async fn lookup(&self, id: SeatId, now: Millis) -> Result<Lookup, LedgerError> {
        self.inner.at(now);
        let mut ended = false;
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, "lookup", &[id.to_string()]).await?;
            match (a.kind, &a.seat) {
                (Kind::Live, Some(r)) => return Ok(Lookup::Live(r.record(&pool.spec.key)?)),
                (Kind::Ended, _) => ended = true,
                (Kind::Unknown, _) => {}
                (k, _) => return Err(corrupt(format!("unexpected answer {k:?} to lookup"))),
            }
        }
        Ok(if ended {
            Lookup::Ended
        } else {
            Lookup::Unknown
        })
    }

    async fn sessions(&self, now: Millis) -> Result<Vec<SeatRecord>, LedgerError> {
        self.list_sessions(now).await
    }

    async fn usage(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError> {
        self.list_usage(now).await
    }

    /// `None` with no view, or one older than [`STALE_AFTER`]: the store stopped answering.
    /// Barging off, 0 while any ticket waits (a newcomer's login would be refused).
    fn available(&self, pool: &PoolKey, _now: Millis) -> Option<u32> {
        self.inner.with_view(pool, View::available)
    }

    async fn sweep(&self, now: Millis) -> Result<usize, LedgerError> {
        self.inner.at(now);
        let mut n = 0;
        for pool in self.inner.all_pools() {
            n += self.inner.call(&pool, "sweep", &[]).await?.released.len();
        }
        self.inner
            .cache
            .retain(|_, c| self.inner.since(c.checked) < CACHE_KEEP);
        Ok(n)
    }

    async fn flush(&self) -> Result<(), LedgerError> {
        self.flush_queued().await
    }

    async fn healthy(&self) -> bool {
        self.inner.ping().await
    }

    fn view_age(&self, pool: &PoolKey, _now: Millis) -> Option<Millis> {
        self.inner
            .views
            .get(pool)
            .map(|v| v.at.elapsed().as_millis() as Millis)
    }

    fn describe(&self) -> serde_json::Value {
        self.inner.describe()
    }

    fn last_known(&self, session: &SessionKey) -> Option<bool> {
        Some(self.inner.cache.contains_key(session))
    }

    /// One line for every replica: joining, and the promotion that may make the ticket ready
    /// at once, are one script call in the pool's slot.
    async fn enqueue(
        &self,
        claim: &Claim,
        ticket: TicketKey,
        now: Millis,
    ) -> Result<Joined, LedgerError> {
        self.inner.at(now);
        // A pool without a line (or none configured) takes no ticket, as on the embedded store.
        let Some(pool) = self
            .inner
            .pool(&claim.pool)
            .filter(|p| p.spec.queue.is_some())
        else {
            return Ok(Joined::LineFull);
        };
        let args = [
            ticket.hex(),
            format!("{:x}", ticket.lease_id()),
            claim.user.clone().unwrap_or_default(),
            claim.client.clone(),
            SeatId::random().to_string(),
        ];
        let a = self.inner.call(&pool, "enqueue", &args).await?;
        match a.kind {
            Kind::Queued => Ok(Joined::Queued(status_of(&a)?)),
            Kind::LineFull => Ok(Joined::LineFull),
            k => Err(corrupt(format!("unexpected answer {k:?} to enqueue"))),
        }
    }

    /// A store round trip (the line is shared); its estimate reads the pool's deadlines and
    /// releases as of the call.
    async fn poll(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Polled, LedgerError> {
        self.inner.at(now);
        // A ticket cookie names its pool: one not configured (or keeping no line) knows none.
        let Some(pool) = self.inner.pool(pool).filter(|p| p.spec.queue.is_some()) else {
            return Ok(Polled::Unknown);
        };
        let args = [ticket.hex(), MIN_POLL_INTERVAL.to_string()];
        let a = self.inner.call(&pool, "poll", &args).await?;
        match a.kind {
            Kind::Queued => Ok(Polled::Status(status_of(&a)?)),
            Kind::TooSoon => Ok(Polled::TooSoon {
                retry_after: a.retry_after,
            }),
            Kind::Unknown => Ok(Polled::Unknown),
            k => Err(corrupt(format!("unexpected answer {k:?} to poll"))),
        }
    }

    async fn queue_admitted(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Option<Ticket>, LedgerError> {
        self.inner.at(now);
        let Some(pool) = self.inner.pool(pool) else {
            return Ok(None);
        };
        let a = self.inner.call(&pool, "admitted", &[ticket.hex()]).await?;
        self.left_ticket(&pool, &a, "queue_admitted")
    }

    async fn remove_ticket(&self, id: SeatId, now: Millis) -> Result<Option<Ticket>, LedgerError> {
        self.inner.at(now);
        for pool in self.inner.all_pools() {
            let a = self
                .inner
                .call(&pool, "unticket", &[id.to_string()])
                .await?;
            if let Some(t) = self.left_ticket(&pool, &a, "remove_ticket")? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    async fn queue(&self, now: Millis) -> Result<Vec<Ticket>, LedgerError> {
        self.inner.at(now);
        let mut out = Vec::new();
        // A pool that keeps no line any more lists none (its tickets lapse at the sweep).
        for pool in self.inner.all_pools() {
            if pool.spec.queue.is_none() {
                continue;
            }
            let a = self.inner.call(&pool, "line", &[]).await?;
            if a.kind != Kind::Line {
                return Err(corrupt(format!("unexpected answer {:?} to line", a.kind)));
            }
            for t in &a.tickets {
                out.push(t.ticket(&pool.spec.key)?);
            }
        }
        Ok(out)
    }

    /// From the pool view (its earliest seat deadlines and last hour's releases, refreshed
    /// every [`VIEW_EVERY`]): `None` without a fresh one, as `available()`.
    fn wait_estimate(&self, pool: &PoolKey, seats: u32, now: Millis) -> Option<Millis> {
        self.inner
            .with_view(pool, |v| {
                estimate(&v.earliest, seats, v.releases, v.window, now)
            })
            .flatten()
    }
}

impl RedisLedger {
    /// The ticket a leaving call answers (`None`: it was not in line).
    fn left_ticket(
        &self,
        pool: &Pool,
        a: &Answer,
        op: &str,
    ) -> Result<Option<Ticket>, LedgerError> {
        match (a.kind, &a.ticket) {
            (Kind::Ticket, Some(t)) => t.ticket(&pool.spec.key).map(Some),
            (Kind::None, _) => Ok(None),
            (k, _) => Err(corrupt(format!("unexpected answer {k:?} to {op}"))),
        }
    }
}

impl RedisLedger {
    async fn pause_or_resume(&self, op: &str, id: SeatId) -> Result<PauseOutcome, LedgerError> {
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, op, &[id.to_string()]).await?;
            let o = match a.kind {
                Kind::Done => PauseOutcome::Done,
                Kind::Full => PauseOutcome::Full,
                Kind::WrongState => PauseOutcome::WrongState,
                Kind::NotFound => continue,
                k => return Err(corrupt(format!("unexpected answer {k:?} to {op}"))),
            };
            self.inner.cache.retain(|_, c| c.seat.id != id);
            return Ok(o);
        }
        Ok(PauseOutcome::NotFound)
    }
}
