//! The seat ledger: who holds which seat, behind one trait so stores can differ.
//!
//! * `memory` keeps seats in a sharded map with a durable redb journal (`journal`): the
//!   single-gateway store (`store.kind: embedded`).
//! * `redis` keeps them in Redis so several replicas share one exact pool.
//!
//! The ledger applies the admission rules atomically (exactness is its job) but the rules
//! themselves are pure functions in `policy::admission` and `policy::seat`, so every backend
//! asks the same questions. Time is always an input (`now`, unix milliseconds).

pub mod journal;
pub mod memory;
pub mod redis;

use crate::config::file::SeatsPer;
use crate::config::{Grant, Product};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

pub type Millis = u64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A session cookie, hashed with its product so the raw value is never stored or logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    pub fn new(product: &str, cookie_value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(product.as_bytes());
        h.update([0u8]);
        h.update(cookie_value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        SessionKey(k)
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SessionKey(k))
    }
}

impl fmt::Debug for SessionKey {
    /// Only a short prefix: enough to correlate log lines, useless to hijack a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sk:{:02x}{:02x}{:02x}{:02x}",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatId(pub u64);

impl SeatId {
    pub fn random() -> Self {
        SeatId(rand::random::<u64>() | 1)
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seat:{self}")
    }
}

impl FromStr for SeatId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.is_empty() || s.len() > 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(SeatId).map_err(|_| ())
    }
}

impl Serialize for SeatId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SeatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("bad seat id `{s}`")))
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub struct PoolKey {
    pub product: String,
    pub pool: String,
}

impl PoolKey {
    pub fn new(product: &str, pool: &str) -> Self {
        PoolKey {
            product: product.into(),
            pool: pool.into(),
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product, self.pool)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SeatState {
    /// Reserved by a login, or committed but not yet used by a second request.
    Standby,
    Active,
    /// Ended by an admin with grace; released at `ending_at`.
    Ending,
    /// Its owner paused it: listed, but holds no seat.
    Paused,
    /// An exempt user's session: known, listed, touched and ended like any other, never counted.
    Exempt,
    /// A named user's session (a seat of their own outside the pool): never counted.
    Named,
}

impl SeatState {
    pub fn as_str(&self) -> &'static str {
        match self {
            SeatState::Standby => "standby",
            SeatState::Active => "active",
            SeatState::Ending => "ending",
            SeatState::Paused => "paused",
            SeatState::Exempt => "exempt",
            SeatState::Named => "named",
        }
    }

    /// Whether a session in this state counts against its pool.
    pub fn holds_seat(&self) -> bool {
        matches!(
            self,
            SeatState::Standby | SeatState::Active | SeatState::Ending
        )
    }

    /// Exempt and named sessions: known to the gateway, never counted.
    pub fn uncounted(&self) -> bool {
        matches!(self, SeatState::Exempt | SeatState::Named)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Logout,
    Idle,
    Lifetime,
    Ended,
    Presence,
    Standby,
    Paused,
    Replaced,
    Config,
    /// The app deleted its session cookie (its own sign-off link or timeout page).
    AppLogout,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 10] = [
        ReleaseReason::Logout,
        ReleaseReason::Idle,
        ReleaseReason::Lifetime,
        ReleaseReason::Ended,
        ReleaseReason::Presence,
        ReleaseReason::Standby,
        ReleaseReason::Paused,
        ReleaseReason::Replaced,
        ReleaseReason::Config,
        ReleaseReason::AppLogout,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseReason::Logout => "logout",
            ReleaseReason::Idle => "idle",
            ReleaseReason::Lifetime => "lifetime",
            ReleaseReason::Ended => "ended",
            ReleaseReason::Presence => "presence",
            ReleaseReason::Standby => "standby",
            ReleaseReason::Paused => "paused",
            ReleaseReason::Replaced => "replaced",
            ReleaseReason::Config => "config",
            ReleaseReason::AppLogout => "app_logout",
        }
    }
}

/// One seat as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRecord {
    pub id: SeatId,
    pub pool: PoolKey,
    pub user: Option<String>,
    pub device: Option<String>,
    pub client: String,
    pub session: Option<SessionKey>,
    pub started_at: Millis,
    /// What the idle timer runs from: the last request that counted as activity (or input).
    pub last_activity: Millis,
    /// 0 = never sent a heartbeat, so presence does not apply.
    pub last_heartbeat: Millis,
    /// The last request of any kind (ignored ones included); 0 = none since this was recorded.
    #[serde(default)]
    pub last_request: Millis,
    /// The last input the heartbeat reported (key, pointer, "Stay signed in"); 0 = none.
    #[serde(default)]
    pub last_input: Millis,
    pub state: SeatState,
    pub ending_at: Option<Millis>,
    #[serde(default)]
    pub overflow: bool,
    #[serde(default)]
    pub ended_by: Option<String>,
}

/// What the ledger needs to know about a pool; rebuilt from config at start and on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub key: PoolKey,
    pub grants: Vec<Grant>,
    pub idle_timeout: Millis,
    pub max_lifetime: Millis,
    pub presence_timeout: Option<Millis>,
    pub standby_timeout: Millis,
    pub seats_per: SeatsPer,
    pub max_sessions: Option<u32>,
    pub groups: Vec<GroupLimit>,
    pub overflow_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLimit {
    pub name: String,
    pub users: HashSet<String>,
    pub reserve: u32,
    pub max: Option<u32>,
}

impl PoolSpec {
    pub fn capacity(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.not_before.is_none_or(|t| now >= t) && g.expires.is_none_or(|t| now < t))
            .map(|g| g.seats)
            .sum()
    }

    pub fn from_product(p: &Product) -> Vec<PoolSpec> {
        p.pools
            .iter()
            .enumerate()
            .map(|(i, pool)| PoolSpec {
                key: PoolKey::new(&p.name, &pool.name),
                grants: pool.grants.clone(),
                idle_timeout: p.session.idle_timeout.as_millis() as u64,
                max_lifetime: p.session.max_lifetime.as_millis() as u64,
                presence_timeout: p.session.presence_timeout.map(|d| d.as_millis() as u64),
                standby_timeout: p.session.standby_timeout.as_millis() as u64,
                seats_per: p.seats_per,
                max_sessions: p.max_sessions,
                groups: p
                    .groups
                    .iter()
                    .filter(|g| g.pool == i)
                    .map(|g| GroupLimit {
                        name: g.name.clone(),
                        users: g.users.clone(),
                        reserve: g.reserve,
                        max: g.max,
                    })
                    .collect(),
                overflow_ms: pool.overflow_ms,
            })
            .collect()
    }
}

/// A login asking for a seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub pool: PoolKey,
    pub user: Option<String>,
    pub device: Option<String>,
    pub client: String,
    /// Chosen by the gateway, so a retried reserve is idempotent.
    pub lease_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub pool: PoolKey,
    /// The seat this login takes over (same user, same device) instead of taking a new one.
    pub reuse: Option<SeatId>,
    pub overflow: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    Pool,
    GroupMax,
    UserMax,
    OverflowSpent,
}

impl FullReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FullReason::Pool => "full",
            FullReason::GroupMax => "group_max",
            FullReason::UserMax => "user_max",
            FullReason::OverflowSpent => "overflow_spent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full {
    pub in_use: u32,
    pub capacity: u32,
    pub reason: FullReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Reservation {
    Granted(Lease),
    Full(Full),
}

/// The answer to "does this cookie hold a seat?".
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Touch {
    Held {
        id: SeatId,
        pool: PoolKey,
        state: SeatState,
        ending_at: Option<Millis>,
    },
    Gone(Gone),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gone {
    /// Never seen (or forgotten): e.g. a session from before the gateway.
    Unknown,
    Released(ReleaseReason),
}

/// One session by id, as the store knows it, without changing it (admin validation).
/// Answered once per admin call and never stored, so the record is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Live(SeatRecord),
    /// Ended or released; its id is remembered.
    Ended,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndOutcome {
    Ending { at: Millis },
    NotFound,
    AlreadyEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseOutcome {
    Done,
    NotFound,
    /// Resume asked while the pool is full.
    Full,
    WrongState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub product: String,
    pub pool: String,
    pub capacity: u32,
    pub in_use: u32,
    pub available: u32,
    pub peak: u32,
    pub denied: u64,
    pub standby: u32,
    pub ending: u32,
    pub overflow_used_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("journal: {0}")]
    Journal(String),
    #[error("lease {0:x} is unknown or expired and the pool is full")]
    LeaseLost(u64),
}

/// A shared value as the store answers it. `Local`: this store belongs to one process and
/// shares nothing, so the caller keeps such values in memory itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Shared<T> {
    Local,
    Value(T),
}

/// Told of every release, whatever caused it (metrics, audit).
pub trait LedgerObserver: Send + Sync {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason);

    /// A paused seat took a seat again (asked through the admin API, or by its next request).
    fn resumed(&self, _seat: &SeatRecord) {}
}

pub struct NoObserver;
impl LedgerObserver for NoObserver {
    fn released(&self, _: &SeatRecord, _: ReleaseReason) {}
}

#[async_trait]
pub trait SeatLedger: Send + Sync + 'static {
    /// Installs the pools of the current config (start and reload). Pools no longer configured
    /// keep their live seats until those end; they just take no new logins.
    fn configure(&self, pools: &[PoolSpec]);

    /// Reserves a seat for a login in flight (or finds the seat it may reuse). The reservation
    /// lapses after the pool's `standby_timeout`; reserving again with the same `lease_id`
    /// finds it.
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

    /// Free seats as this gateway sees them, without a store round trip (checks). `None`
    /// when there is no current view: on Redis, none yet or one older than two refresh
    /// periods (the store stopped answering); the embedded store always has one.
    fn available(&self, pool: &PoolKey, now: Millis) -> Option<u32>;

    /// Releases whatever expired (as of its deadline); returns how many. Also ends the
    /// overflow seats of a pool whose `overflow_ms` allowance is spent (reason `Ended`,
    /// `ended_by` "overflow", the notice of an admin end), and forgets tombstones and ended
    /// ids whose time is up.
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

    /// Sets the shared value `name` to `value` unless it is set (expiring after `ttl_ms` when
    /// given) and answers the value it now holds, the same for every gateway on this store: a
    /// secret all replicas agree on, or a mark that only the first of them gets.
    async fn shared_once(
        &self,
        _name: &str,
        _value: &str,
        _ttl_ms: Option<Millis>,
    ) -> Result<Shared<String>, LedgerError> {
        Ok(Shared::Local)
    }

    /// Replaces the shared value `name` by `value` (expiring after `ttl_ms`), or removes it
    /// when `value` is `None`, and answers what it held before.
    async fn shared_swap(
        &self,
        _name: &str,
        _value: Option<&str>,
        _ttl_ms: Millis,
    ) -> Result<Shared<Option<String>>, LedgerError> {
        Ok(Shared::Local)
    }

    /// The store's state for `/healthz` (kind, reachability, last error).
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "embedded" })
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
