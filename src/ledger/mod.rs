//! The seat ledger: who holds which seat, behind one trait so stores can differ.
//!
//! * `memory` keeps seats in a sharded map with a durable redb journal (`journal`): the
//!   single-gateway store (`store.kind: embedded`).
//! * `redis` keeps them in Redis so several replicas share one exact pool.
//!
//! The ledger applies the admission rules atomically (exactness is its job) but the rules
//! themselves are pure functions in `policy::admission` and `policy::seat`, so every backend
//! asks the same questions. Time is always an input (`now`, unix milliseconds).
//!
//! The seat vocabulary lives in `crate::domain`, where every caller imports it from;
//! this module owns the store traits (`SeatLedger`, its supertrait `SharedState` for the few
//! shared values self-service keeps), `LedgerError` and the observer. It imports no config:
//! pools arrive as `PoolSpec`s, the Redis target as `domain::RedisConfig`.

pub mod journal;
pub mod memory;
pub mod redis;
mod shared;

pub use shared::{Shared, SharedState};

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

// The stores speak the domain's vocabulary; callers import it from `crate::domain`.
use crate::domain::{
    Claim, EndOutcome, Joined, Lease, Lookup, Millis, PauseOutcome, Polled, PoolKey, PoolSpec,
    PoolUsage, QueueEvent, ReleaseReason, Reservation, SeatId, SeatRecord, SeatState, SessionKey,
    Ticket, TicketKey, Touch,
};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("journal: {0}")]
    Journal(String),
    #[error("lease {0:x} is unknown or expired and the pool is full")]
    LeaseLost(u64),
    /// The pool is not one `configure` installed: the caller asked for a pool its config does
    /// not give the ledger, a config problem whatever the store's health.
    #[error("unknown pool {0}")]
    UnknownPool(PoolKey),
    /// The store holds or answered a value this gateway cannot read (another version's data,
    /// or damage): refused, never read as a default.
    #[error("unreadable store data: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// Whether the store failed to answer, to write or to be read (`on_store_error` applies);
    /// `false` for answers about the request itself (a lost lease, a pool not configured).
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            LedgerError::Unavailable(_) | LedgerError::Journal(_) | LedgerError::Corrupt(_)
        )
    }
}

/// Told of every release, whatever caused it (metrics, audit).
pub trait LedgerObserver: Send + Sync {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason);

    /// A paused seat took a seat again (asked through the admin API, or by its next request).
    fn resumed(&self, _seat: &SeatRecord) {}

    /// A ticket joined, became ready or left the line (`at`: when; for `Left(Admitted)`,
    /// `at - ticket.joined_at` is the wait). Told once, by the ledger that did it; a login
    /// refused because the line is full is `Left(LineFull)` with the ticket it would have had.
    fn queue_event(&self, _ticket: &Ticket, _ev: QueueEvent, _at: Millis) {}
}

pub struct NoObserver;
impl LedgerObserver for NoObserver {
    fn released(&self, _: &SeatRecord, _: ReleaseReason) {}
}

#[async_trait]
/// Seats. Its supertrait `SharedState` is the store's small key-value side (self-service
/// token state and holds); with `SharedState` in scope a ledger answers both.
pub trait SeatLedger: SharedState + Send + Sync + 'static {
    /// Installs the pools of the current config (start and reload). Pools no longer configured
    /// keep their live seats until those end; they just take no new logins.
    fn configure(&self, pools: &[PoolSpec]);

    /// Reserves a seat for a login in flight (or finds the seat it may reuse). The reservation
    /// lapses after the pool's `standby_timeout`; reserving again with the same `lease_id`
    /// finds it (a ready ticket's held seat is found this way). With a `queue` whose
    /// `barging` is off the line promotes first (see `poll`), so a freed seat goes to the head
    /// of the line before any newcomer; then, while any ticket still waits, a reservation
    /// that is not a ready ticket's is `Full` (reason `Pool`): newcomers join the back.
    async fn reserve(&self, claim: &Claim, now: Millis) -> Result<Reservation, LedgerError>;

    /// Like `reserve`, but the reservation lapses after `ttl_ms`: a seat held for a user who is
    /// about to log in again (self-service), whose next login reserves with the same lease id.
    async fn hold(
        &self,
        claim: &Claim,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Reservation, LedgerError>;

    /// Binds a granted lease to the session cookie the app set. Durable before it returns.
    ///
    /// Idempotent per cookie: when `session` already leads to a live session (any pool of the
    /// product, any state: paused and uncounted included) the lease is dropped and that
    /// session's id returned, so many requests with one cookie never take two seats. A lease
    /// that lapsed (`standby_timeout`, or the `hold` ttl) is admitted afresh: `LeaseLost` when
    /// the pool is full. On the embedded store a failed journal write answers `Journal` and
    /// the seat is not taken.
    async fn commit(
        &self,
        lease: &Lease,
        claim: &Claim,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError>;

    /// Drops a lease whose login did not succeed.
    async fn cancel(&self, lease: &Lease);

    /// Registers the session of a user who takes no seat (`state` is `Exempt` or `Named`;
    /// any other state is an error): known, listed, touched (`Touch::Held` with that state),
    /// heartbeats count, released by logout, app logout, idle, presence and lifetime like any
    /// other, never counted in `usage`, `available` or capacity (admitted with the pool full).
    /// Durable before it returns. Idempotent per cookie like `commit`: a cookie that already
    /// leads to a live session gets that session's id, whatever its state. `pause`/`resume`
    /// answer `WrongState`; `end` with grace sets `ending_at` and keeps the state (an ending
    /// uncounted session still counts nothing). Its releases reach the observer like a
    /// seat's, with the record's state `Exempt`/`Named`.
    async fn admit_uncounted(
        &self,
        claim: &Claim,
        state: SeatState,
        session: SessionKey,
        now: Millis,
    ) -> Result<SeatId, LedgerError>;

    /// The app set a new value for its session cookie (id rotation, password change): the
    /// seat (or uncounted session) held by `old` moves to `new` — same id, user, state,
    /// start, deadlines — and `old` is refused from then on (`Touch::Gone(Released(Replaced))`).
    /// `None` when `old` holds nothing (never seen, released, or past its deadline: then it
    /// is released for what ended it). `old == new`: its id, nothing changes. When `new`
    /// already leads to a live session of its own, that one stays and the seat of `old` is
    /// released (`Replaced`, observed): the answer is `new`'s session id. Durable before it
    /// returns; on Redis one script call within a pool.
    async fn rekey(
        &self,
        old: &SessionKey,
        new: SessionKey,
        now: Millis,
    ) -> Result<Option<SeatId>, LedgerError>;

    /// One session by id, without changing anything (no release, no activity, no observer).
    /// `Live` for every listed session, ending and paused ones included (look at its state);
    /// `Ended` exactly when `end` would answer `AlreadyEnded`: ended (by an admin, or an
    /// overflow allowance) within the last hour, or past its grace and not yet swept;
    /// `Unknown` otherwise (never seen, logged out, idle, or past its deadline for another
    /// reason).
    async fn lookup(&self, id: SeatId, now: Millis) -> Result<Lookup, LedgerError>;

    /// A request carrying `session`: refreshes its activity, or says why it holds no seat.
    async fn touch(&self, session: &SessionKey, now: Millis) -> Result<Touch, LedgerError> {
        self.touch_as(session, true, now).await
    }

    /// `touch`, saying whether the request is activity. With `activity == false` (a request
    /// `session.activity` ignores, or one that is not input under `idle_by: input`) the
    /// answer is the same and `last_request` is recorded, but the idle timer is left as it
    /// was: a page polling in the background does not keep its seat. A standby or paused
    /// session is still activated or resumed (that state change refreshes activity, as with
    /// `touch`). `last_request` is recorded by every touch.
    async fn touch_as(
        &self,
        session: &SessionKey,
        activity: bool,
        now: Millis,
    ) -> Result<Touch, LedgerError>;

    /// A presence ping: never refreshes activity. `false` when the session holds no seat.
    async fn heartbeat(&self, session: &SessionKey, now: Millis) -> Result<bool, LedgerError> {
        Ok(self.beat(session, false, now).await?.is_some())
    }

    /// A presence ping. With `input` (the person used the page since the previous beat, or
    /// pressed "Stay signed in") it is also activity: `last_activity` and `last_input` become
    /// `now`. `Some(last_activity)` after the beat, from which the caller tells how long
    /// until an idle end; `None` when the session holds no seat (unknown, ended, paused),
    /// and then nothing changes, whatever `input` claims.
    async fn beat(
        &self,
        session: &SessionKey,
        input: bool,
        now: Millis,
    ) -> Result<Option<Millis>, LedgerError>;

    /// Releases the session `session` leads to for `reason` (tombstoned until the pool's
    /// `max_lifetime` from now). `None` when it holds nothing: also when it is past its
    /// deadline, in which case it is released for what ended it (the tombstone then says so).
    async fn release(
        &self,
        session: &SessionKey,
        reason: ReleaseReason,
        now: Millis,
    ) -> Result<Option<SeatRecord>, LedgerError>;

    async fn end(
        &self,
        ids: &[SeatId],
        grace_ms: Millis,
        by: &str,
        now: Millis,
    ) -> Result<Vec<(SeatId, EndOutcome)>, LedgerError>;

    async fn pause(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError>;

    async fn resume(&self, id: SeatId, now: Millis) -> Result<PauseOutcome, LedgerError>;

    /// Every listed session (held, standby, ending, paused); expired ones are never included.
    async fn sessions(&self, now: Millis) -> Result<Vec<SeatRecord>, LedgerError>;

    async fn usage(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError>;

    /// Free seats for a newcomer as this gateway sees them, without a store round trip
    /// (checks): 0 while a pool's line waits with `barging` off. `None`
    /// when there is no current view: on Redis, none yet or one older than two refresh
    /// periods (the store stopped answering); the embedded store always has one.
    fn available(&self, pool: &PoolKey, now: Millis) -> Option<u32>;

    /// Releases whatever expired (as of its deadline); returns how many. Also ends the
    /// overflow seats of a pool whose `overflow_ms` allowance is spent (reason `Ended`,
    /// `ended_by` "overflow", the notice of an admin end), and forgets tombstones and ended
    /// ids whose time is up. Lines: drops abandoned and expired tickets and, where
    /// `barging` is off, promotes (as `poll` does), so a freed seat is held for the head even
    /// when no one polls or logs in.
    async fn sweep(&self, now: Millis) -> Result<usize, LedgerError>;

    /// Writes batched activity.
    async fn flush(&self) -> Result<(), LedgerError>;

    /// Whether the store answers and takes writes: `false` while the last write failed and
    /// none has succeeded since (the reason is in `describe()`).
    async fn healthy(&self) -> bool;

    /// How old this gateway's view of `pool` is (the counts checks answer from); `Some(0)`
    /// for a store that is its own view, `None` when there is no view yet.
    fn view_age(&self, _pool: &PoolKey, _now: Millis) -> Option<Millis> {
        Some(0)
    }

    /// The store's state for `/healthz` (kind, reachability, last error).
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "embedded" })
    }

    /// Joins the waiting line of `claim.pool` with `ticket` (a login refused for want of a
    /// seat; the caller never asks for a pool whose spec has no `queue`: such a pool answers
    /// `LineFull` and tells no observer). The ticket's lease id is `ticket.lease_id()`; user and
    /// client come from `claim`. A ticket already in line keeps its place (its status, the
    /// poll time refreshed). The line promotes first (see `poll`), so the answer may be
    /// `Ready` at once. `LineFull` when `max_length` tickets are in line (observed as
    /// `Left(LineFull)`). On Redis one line for every replica, decided in one script call.
    async fn enqueue(
        &self,
        claim: &Claim,
        ticket: TicketKey,
        now: Millis,
    ) -> Result<Joined, LedgerError>;

    /// A ticket's page asks where it stands. Refreshes its poll time (a waiting ticket not
    /// polled for `abandon_after` leaves, `Abandoned`), drops tickets past `max_wait` or past
    /// their hold (`Expired`), then promotes: while a seat is free for the head waiting ticket
    /// (the pool's admission rules for its user, overflow never), it becomes `Ready` and a
    /// reservation under its lease id counts until `ready_until = now + hold`; the login that
    /// carries the ticket finds it with `reserve` (claim.lease_id = ticket.lease_id()).
    /// `TooSoon` when polled again within `MIN_POLL_INTERVAL` (nothing changes);
    /// `Unknown` for a ticket not in this pool's line. On the embedded store no I/O.
    async fn poll(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Polled, LedgerError>;

    /// The login carrying `ticket` committed its seat: the ticket leaves (`Left(Admitted)`).
    /// `None` when it was not in line.
    async fn queue_admitted(
        &self,
        pool: &PoolKey,
        ticket: &TicketKey,
        now: Millis,
    ) -> Result<Option<Ticket>, LedgerError>;

    /// An admin removes a ticket by its public id (`Left(Removed)`); a ready ticket's held
    /// seat is given back (and promoted to the next). `None` when no line has it.
    async fn remove_ticket(&self, id: SeatId, now: Millis) -> Result<Option<Ticket>, LedgerError>;

    /// Every pool's line, in order (pool key, then position); lapsed tickets never included.
    async fn queue(&self, now: Millis) -> Result<Vec<Ticket>, LedgerError>;

    /// How long until `seats` seats are likely free in `pool` (`policy::queue::estimate` on the
    /// pool's earliest seat deadlines and its releases over the last hour), from this
    /// gateway's view, without a store round trip: the `Retry-After` of a full pool's denial.
    /// `None`: unknown.
    fn wait_estimate(&self, _pool: &PoolKey, _seats: u32, _now: Millis) -> Option<Millis> {
        None
    }

    /// Whether this gateway last saw `session` holding a seat, without asking the store
    /// (`on_store_error: last_known`). `None`: the store keeps no such view. Unlike
    /// `available`, it keeps answering while the store is down: a session this gateway saw
    /// holding a seat goes on.
    fn last_known(&self, _session: &SessionKey) -> Option<bool> {
        None
    }
}

pub type SharedLedger = Arc<dyn SeatLedger>;

/// A store's pools by key, as both stores keep them (`configure` writes, requests read).
/// Pools by key. Every check and login looks its pool up here; the keys come from config, not
/// from clients, so foldhash (still seeded per process) replaces SipHash, which was a visible
/// part of a check's cost.
type Pools<T> = RwLock<HashMap<PoolKey, Arc<T>, foldhash::fast::RandomState>>;

/// A poisoned lock is read through: `configure` only inserts whole entries, so a panic there
/// never leaves a half-written pool behind.
fn pool_in<T>(pools: &Pools<T>, key: &PoolKey) -> Option<Arc<T>> {
    pools
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

/// Every pool, ordered by key so that sweeps and listings are stable.
fn pools_by_key<T>(pools: &Pools<T>) -> Vec<Arc<T>> {
    let map = pools.read().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, p)| p.clone()).collect()
}
