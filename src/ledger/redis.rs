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
//! Connection: the client is built at start (bad URLs fail then) but connects on first use,
//! inside pingora's runtimes: a connection made on the short-lived runtime that opens the
//! ledger would die with it. A failed connect is retried at most every [`RECONNECT_BACKOFF`].

use super::{
    Claim, EndOutcome, Full, FullReason, Gone, Lease, LedgerError, LedgerObserver, Millis,
    PauseOutcome, PoolKey, PoolSpec, PoolUsage, ReleaseReason, Reservation, SeatId, SeatLedger,
    SeatRecord, SeatState, SessionKey, Shared, SharedState, Touch,
};
use crate::domain::{RedisConfig, RedisTarget, SeatsPer};
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

const SCRIPT: &str = include_str!("redis/seats.lua");
/// `shared_once`: set unless present (with an optional expiry in ms), answer what is there.
const ONCE: &str = r#"
local set
if ARGV[2] ~= '' then set = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else set = redis.call('SET', KEYS[1], ARGV[1], 'NX') end
if set then return ARGV[1] end
return redis.call('GET', KEYS[1])
"#;
/// `shared_swap`: set (or, with an empty value, delete), answer the old value ('' for none).
const SWAP: &str = r#"
local old = redis.call('GET', KEYS[1])
if ARGV[1] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return old or ''
"#;

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
/// Verified sessions are remembered this long (after which only Redis knows them): what
/// `last_known` answers from during an outage, and what `restore` re-seats after one.
const CACHE_KEEP: Duration = Duration::from_secs(15 * 60);
/// Sessions cached at most; beyond it entries are simply verified on each request.
const MAX_CACHED: usize = 500_000;

enum Clients {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

#[derive(Clone)]
enum Conn {
    /// Reconnects by itself.
    Managed(ConnectionManager),
    /// Follows slot moves and reconnects by itself.
    Cluster(ClusterConnection),
    /// A connection to the master Sentinel named; dropped on error so the next call asks the
    /// Sentinels again (that is how a failover is followed).
    Plain(MultiplexedConnection),
}

struct Pool {
    spec: PoolSpec,
    spec_json: String,
    keys: Vec<String>,
}

/// A seat as the script stores it (JSON; empty strings and 0 stand for "none").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Rec {
    id: SeatId,
    #[serde(default)]
    user: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    session: String,
    #[serde(deserialize_with = "de_u64")]
    started_at: u64,
    #[serde(deserialize_with = "de_u64")]
    last_activity: u64,
    #[serde(deserialize_with = "de_u64")]
    last_heartbeat: u64,
    #[serde(default, deserialize_with = "de_u64")]
    last_request: u64,
    #[serde(default, deserialize_with = "de_u64")]
    last_input: u64,
    state: SeatState,
    #[serde(default, deserialize_with = "de_u64")]
    ending_at: u64,
    #[serde(default)]
    overflow: bool,
    #[serde(default)]
    ended_by: String,
}

#[derive(Clone)]
struct Cached {
    pool: PoolKey,
    seat: Rec,
    epoch: String,
    checked: Stamp,
    /// The seat's deadline as verified (later touches only move it later): a cache hit never
    /// answers for a seat past it.
    deadline: Millis,
}

/// When something happened, for the gateway's own timers (cache freshness, activity age):
/// wall-clock time, or the test clock's `now` while a test drives time.
#[derive(Clone, Copy)]
struct Stamp {
    at: Instant,
    ms: Millis,
}

#[derive(Clone, Copy)]
struct View {
    capacity: u32,
    held: u32,
    at: Instant,
}

impl View {
    fn fresh(&self) -> bool {
        self.at.elapsed() <= STALE_AFTER
    }
}

#[derive(Default, Clone)]
struct Health {
    up: bool,
    last_error: Option<String>,
    changed_at: Millis,
    /// The last script call failed and none has succeeded since. A PING does not clear it:
    /// a primary that refuses writes (`NOREPLICAS`, `READONLY`, `OOM`) still answers PING.
    write_error: Option<String>,
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

/// Lua numbers are doubles and cjson may print them as such; a negative or non-finite one is
/// no count or time of the script's and is refused.
fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v as u64)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{v}` is not a count or time"
        )))
    }
}

/// cjson encodes an empty Lua table as `{}`: accept it for an empty list.
fn de_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SeqOrMap<T> {
        Seq(Vec<T>),
        Map(#[allow(dead_code)] serde_json::Map<String, serde_json::Value>),
    }
    Ok(match SeqOrMap::<T>::deserialize(d)? {
        SeqOrMap::Seq(v) => v,
        SeqOrMap::Map(_) => Vec::new(),
    })
}

#[derive(Deserialize, Debug)]
struct Released {
    seat: Rec,
    reason: ReleaseReason,
}

/// What the script answered; an unknown kind fails the parse.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    #[default]
    Ok,
    Granted,
    Full,
    Seat,
    Lost,
    Gone,
    Held,
    Skip,
    None,
    Released,
    Ended,
    NotFound,
    WrongState,
    Done,
    Live,
    Unknown,
    View,
    List,
}

/// An admin end's answer per seat.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum EndWhat {
    Ending,
    AlreadyEnded,
    NotFound,
}

/// Why a cookie holds no seat, as `touch` and `heartbeat` answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoneWhy {
    Unknown,
    Paused,
    Released(ReleaseReason),
}

fn parse_gone(s: &str) -> Result<GoneWhy, LedgerError> {
    match s {
        "unknown" => Ok(GoneWhy::Unknown),
        "paused" => Ok(GoneWhy::Paused),
        r => r.parse().map(GoneWhy::Released).map_err(corrupt),
    }
}

#[derive(Deserialize, Debug, Default)]
struct Answer {
    kind: Kind,
    #[serde(default)]
    reuse: Option<SeatId>,
    #[serde(default)]
    overflow: bool,
    #[serde(default, deserialize_with = "de_u64")]
    in_use: u64,
    #[serde(default, deserialize_with = "de_u64")]
    capacity: u64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    id: Option<SeatId>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    seat: Option<Rec>,
    /// The seat a paused session took again (resume, or a request from it).
    #[serde(default)]
    resumed: Option<Rec>,
    #[serde(default, deserialize_with = "de_seq")]
    released: Vec<Released>,
    #[serde(default, deserialize_with = "de_seq")]
    out: Vec<(SeatId, EndWhat, f64)>,
    #[serde(default, deserialize_with = "de_u64")]
    now: u64,
    #[serde(default, deserialize_with = "de_u64")]
    held: u64,
    #[serde(default, deserialize_with = "de_seq")]
    seats: Vec<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pending: u64,
    #[serde(default, deserialize_with = "de_u64")]
    peak: u64,
    #[serde(default, deserialize_with = "de_u64")]
    denied: u64,
    #[serde(default, deserialize_with = "de_u64")]
    overflow_ms: u64,
    /// Until when a released cookie's reason is remembered (the latest release wins when
    /// several pools remember one cookie).
    #[serde(default, deserialize_with = "de_u64")]
    gone_until: u64,
    /// The cookie a login's reused seat moved away from (its cached entry is stale).
    #[serde(default)]
    replaced: Option<String>,
}

/// The pool spec as the script reads it.
#[derive(Serialize)]
struct SpecJson<'a> {
    grants: Vec<GrantJson>,
    idle_timeout: u64,
    max_lifetime: u64,
    presence_timeout: Option<u64>,
    standby_timeout: u64,
    seats_per: &'static str,
    max_sessions: Option<u32>,
    groups: Vec<GroupJson<'a>>,
    overflow_ms: Option<u64>,
}

#[derive(Serialize)]
struct GrantJson {
    seats: u32,
    not_before: Option<u64>,
    expires: Option<u64>,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    users: Vec<&'a str>,
    reserve: u32,
    max: Option<u32>,
}

fn spec_json(spec: &PoolSpec) -> String {
    let mut groups: Vec<GroupJson> = spec
        .groups
        .iter()
        .map(|g| {
            let mut users: Vec<&str> = g.users.iter().map(String::as_str).collect();
            users.sort_unstable();
            GroupJson {
                users,
                reserve: g.reserve,
                max: g.max,
            }
        })
        .collect();
    groups.shrink_to_fit();
    let j = SpecJson {
        grants: spec
            .grants
            .iter()
            .map(|g| GrantJson {
                seats: g.seats,
                not_before: g.not_before,
                expires: g.expires,
            })
            .collect(),
        idle_timeout: spec.idle_timeout,
        max_lifetime: spec.max_lifetime,
        presence_timeout: spec.presence_timeout,
        standby_timeout: spec.standby_timeout,
        seats_per: match spec.seats_per {
            SeatsPer::Session => "session",
            SeatsPer::User => "user",
            SeatsPer::UserDevice => "user_device",
        },
        max_sessions: spec.max_sessions,
        groups,
        overflow_ms: spec.overflow_ms,
    };
    serde_json::to_string(&j).unwrap_or_default()
}

/// `{prefix:product:pool}`: braces in names would break the hash tag, so they are replaced.
fn pool_tag(prefix: &str, key: &PoolKey) -> String {
    let clean = |s: &str| s.replace(['{', '}'], "_");
    format!(
        "{{{}:{}:{}}}",
        prefix,
        clean(&key.product),
        clean(&key.pool)
    )
}

fn pool_keys(prefix: &str, key: &PoolKey) -> Vec<String> {
    let tag = pool_tag(prefix, key);
    [
        "z", "seats", "sess", "pend", "pinfo", "gone", "gonez", "stats", "paused", "ended", "unc",
    ]
    .iter()
    .map(|s| format!("{tag}:{s}"))
    .collect()
}

/// A `full` answer's reason; one without a reason is refused like an unknown one.
fn parse_full(s: Option<&str>) -> Result<FullReason, LedgerError> {
    s.unwrap_or_default().parse().map_err(corrupt)
}

/// A session key as the script stores it: empty for none, else 32 hex digits.
fn parse_session(s: &str) -> Result<Option<SessionKey>, LedgerError> {
    if s.is_empty() {
        return Ok(None);
    }
    SessionKey::from_hex(s)
        .map(Some)
        .ok_or_else(|| corrupt(format!("bad session key `{s}`")))
}

/// A `list` answer's seats (the pool's stored records): one that cannot be read fails the
/// listing rather than going missing from it.
fn seats_of(a: &Answer) -> Result<Vec<Rec>, LedgerError> {
    a.seats
        .iter()
        .map(|raw| {
            serde_json::from_str::<Rec>(raw).map_err(|e| corrupt(format!("stored seat: {e}")))
        })
        .collect()
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Rec {
    fn times(&self) -> SeatTimes {
        SeatTimes {
            started_at: self.started_at,
            last_activity: self.last_activity,
            last_heartbeat: self.last_heartbeat,
            state: self.state,
            ending_at: (self.ending_at > 0).then_some(self.ending_at),
        }
    }

    fn record(&self, pool: &PoolKey) -> Result<SeatRecord, LedgerError> {
        let t = self.times();
        Ok(SeatRecord {
            id: self.id,
            pool: pool.clone(),
            user: opt(&self.user),
            device: opt(&self.device),
            client: self.client.clone(),
            session: parse_session(&self.session)?,
            started_at: self.started_at,
            last_activity: self.last_activity,
            last_heartbeat: self.last_heartbeat,
            last_request: self.last_request,
            last_input: self.last_input,
            state: t.state,
            ending_at: t.ending_at,
            overflow: self.overflow,
            ended_by: opt(&self.ended_by),
        })
    }
}

fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("redis: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("redis: {e}"))
}

impl RedisLedger {
    /// Builds the client for the configured target without connecting: a URL that cannot be
    /// used is an error now, a server that is down is not (the gateway starts and reports it).
    pub fn new(cfg: &RedisConfig, observer: Arc<dyn LedgerObserver>) -> Result<Self, LedgerError> {
        let (target, clients) = match &cfg.target {
            RedisTarget::Single(url) => (
                "single",
                Clients::Single(redis::Client::open(url.as_str()).map_err(unavailable)?),
            ),
            RedisTarget::Cluster(urls) => (
                "cluster",
                Clients::Cluster(
                    ClusterClient::builder(urls.clone())
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(CALL_TIMEOUT)
                        .build()
                        .map_err(unavailable)?,
                ),
            ),
            RedisTarget::Sentinel { master, urls } => (
                "sentinel",
                Clients::Sentinel(tokio::sync::Mutex::new(
                    SentinelClient::build(
                        urls.clone(),
                        master.clone(),
                        None,
                        SentinelServerType::Master,
                    )
                    .map_err(unavailable)?,
                )),
            ),
        };
        Ok(RedisLedger {
            inner: Arc::new(Inner {
                target,
                clients,
                script: redis::Script::new(SCRIPT),
                once: redis::Script::new(ONCE),
                swap: redis::Script::new(SWAP),
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                failed_at: Mutex::new(None),
                prefix: cfg.prefix.clone(),
                pools: RwLock::new(HashMap::default()),
                cache: DashMap::new(),
                activity: DashMap::new(),
                requests: DashMap::new(),
                views: DashMap::new(),
                refresher: AtomicBool::new(false),
                observer,
                health: Mutex::new(Health::default()),
                clock_offset: AtomicI64::new(0),
                caller_clock: AtomicBool::new(false),
                caller_now: AtomicU64::new(0),
            }),
        })
    }

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

    /// Evaluates the pure rules of the script on one case (tests compare them with Rust).
    #[doc(hidden)]
    pub async fn script_rules(
        &self,
        spec: &PoolSpec,
        case: &serde_json::Value,
    ) -> Result<serde_json::Value, LedgerError> {
        let pool = Pool {
            spec: spec.clone(),
            spec_json: spec_json(spec),
            keys: pool_keys(&self.inner.prefix, &spec.key),
        };
        let raw = self.inner.eval(&pool, "rules", &[case.to_string()]).await?;
        serde_json::from_str(&raw).map_err(unavailable)
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

    fn stamp(&self) -> Stamp {
        Stamp {
            at: Instant::now(),
            ms: self.caller_now.load(Ordering::Relaxed),
        }
    }

    fn since(&self, s: Stamp) -> Duration {
        if self.caller_clock.load(Ordering::Relaxed) {
            Duration::from_millis(self.caller_now.load(Ordering::Relaxed).saturating_sub(s.ms))
        } else {
            s.at.elapsed()
        }
    }

    fn wall_ms(&self) -> Millis {
        if self.caller_clock.load(Ordering::Relaxed) {
            self.caller_now.load(Ordering::Relaxed)
        } else {
            super::now_ms()
        }
    }

    /// The spec argument of a script call, with the test clock when one is set.
    fn spec_arg<'a>(&self, pool: &'a Pool) -> Cow<'a, str> {
        let with = |name: &str, v: String| {
            let j = &pool.spec_json;
            Cow::Owned(format!(
                "{},\"{name}\":{v}}}",
                &j[..j.len().saturating_sub(1)]
            ))
        };
        if self.caller_clock.load(Ordering::Relaxed) {
            return with(
                "clock_ms",
                self.caller_now.load(Ordering::Relaxed).to_string(),
            );
        }
        match self.clock_offset.load(Ordering::Relaxed) {
            0 => Cow::Borrowed(&pool.spec_json),
            off => with("clock_offset", off.to_string()),
        }
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

    fn set_health(&self, up: bool, err: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.up != up || h.changed_at == 0 {
            h.changed_at = super::now_ms();
            if up {
                log::info!("redis store reachable");
            } else {
                log::warn!("redis store unreachable: {}", err.as_deref().unwrap_or("?"));
            }
        }
        h.up = up;
        if err.is_some() {
            h.last_error = err;
        }
    }

    fn set_write_error(&self, err: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.write_error.is_some() != err.is_some() {
            match &err {
                Some(e) => log::warn!("redis store refuses writes: {e}"),
                None => log::info!("redis store takes writes again"),
            }
        }
        h.write_error = err;
    }

    fn write_error(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_error
            .clone()
    }

    async fn connect(&self) -> redis::RedisResult<Conn> {
        match &self.clients {
            Clients::Single(c) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(CALL_TIMEOUT)
                    .set_number_of_retries(2)
                    .set_max_delay(500);
                ConnectionManager::new_with_config(c.clone(), cfg)
                    .await
                    .map(Conn::Managed)
            }
            Clients::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
            Clients::Sentinel(c) => c.lock().await.get_async_connection().await.map(Conn::Plain),
        }
    }

    async fn conn(self: &Arc<Self>) -> Result<Conn, LedgerError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        if self
            .failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF)
        {
            return Err(LedgerError::Unavailable(
                "redis: not connected (retrying)".into(),
            ));
        }
        let res = match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.connect()).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(LedgerError::Unavailable("redis: connect timed out".into())),
        };
        match res {
            Ok(c) => {
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.start_refresher();
                Ok(c)
            }
            Err(e) => {
                *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                self.set_health(false, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Shared values live under their own hash tag, apart from every pool's.
    fn shared_key(&self, name: &str) -> String {
        format!("{{{}:shared}}:{name}", self.prefix)
    }

    /// One script call. Returns the raw JSON answer.
    async fn eval(
        self: &Arc<Self>,
        pool: &Pool,
        op: &str,
        args: &[String],
    ) -> Result<String, LedgerError> {
        let mut inv = self.script.prepare_invoke();
        for k in &pool.keys {
            inv.key(k);
        }
        inv.arg(op).arg(self.spec_arg(pool).as_ref());
        for a in args {
            inv.arg(a);
        }
        self.invoke(inv).await
    }

    /// Runs a prepared script call with the call timeout, keeping the health state.
    async fn invoke(
        self: &Arc<Self>,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<String, LedgerError> {
        let conn = self.conn().await?;
        let fut = async {
            match conn.clone() {
                Conn::Managed(mut c) => inv.invoke_async::<String>(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async::<String>(&mut c).await,
                Conn::Plain(mut c) => inv.invoke_async::<String>(&mut c).await,
            }
        };
        let res = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("call timed out".to_string()),
        };
        match res {
            Ok(s) => {
                self.set_health(true, None);
                self.set_write_error(None);
                Ok(s)
            }
            Err(e) => {
                if matches!(conn, Conn::Plain(_)) {
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                self.set_health(false, Some(e.clone()));
                self.set_write_error(Some(e.clone()));
                Err(LedgerError::Unavailable(format!("redis: {e}")))
            }
        }
    }

    /// A script call whose answer is parsed, and whose releases reach the observer and the cache.
    async fn call(
        self: &Arc<Self>,
        pool: &Pool,
        op: &str,
        args: &[String],
    ) -> Result<Answer, LedgerError> {
        let raw = self.eval(pool, op, args).await?;
        let a: Answer =
            serde_json::from_str(&raw).map_err(|e| corrupt(format!("bad answer to {op}: {e}")))?;
        // Every release is told before any unreadable one is reported: the script made them all.
        let mut bad = None;
        for r in &a.released {
            match r.seat.record(&pool.spec.key) {
                Ok(rec) => {
                    if let Some(k) = rec.session {
                        self.cache.remove(&k);
                    }
                    self.activity.remove(&rec.id);
                    self.requests.remove(&rec.id);
                    self.observer.released(&rec, r.reason);
                }
                Err(e) => bad = Some(e),
            }
        }
        if let Some(r) = &a.resumed {
            self.observer.resumed(&r.record(&pool.spec.key)?);
        }
        match bad {
            Some(e) => Err(e),
            None => Ok(a),
        }
    }

    fn start_refresher(self: &Arc<Self>) {
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

    async fn refresh_views(self: &Arc<Self>) {
        for pool in self.all_pools() {
            if let Ok(a) = self.call(&pool, "view", &[]).await {
                self.views.insert(
                    pool.spec.key.clone(),
                    View {
                        capacity: a.capacity as u32,
                        held: a.held as u32,
                        at: Instant::now(),
                    },
                );
            }
        }
    }

    /// The pools where a session may be: the one it was last seen in, else every pool.
    fn pools_for(&self, session: &SessionKey) -> Vec<Arc<Pool>> {
        if let Some(p) = self.cache.get(session).and_then(|c| self.pool(&c.pool)) {
            return vec![p];
        }
        self.all_pools()
    }

    fn remember(&self, session: SessionKey, pool: &PoolKey, seat: Rec, epoch: Option<String>) {
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

    fn held(pool: &PoolKey, seat: &Rec) -> Touch {
        Touch::Held {
            id: seat.id,
            pool: pool.clone(),
            state: seat.state,
            ending_at: (seat.ending_at > 0).then_some(seat.ending_at),
        }
    }

    /// Verifies a session with Redis (cache miss or stale entry).
    async fn verify(
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
    async fn restore(
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
impl SharedState for RedisLedger {
    async fn shared_once(
        &self,
        name: &str,
        value: &str,
        ttl_ms: Option<Millis>,
    ) -> Result<Shared<String>, LedgerError> {
        let mut inv = self.inner.once.prepare_invoke();
        inv.key(self.inner.shared_key(name))
            .arg(value)
            .arg(ttl_ms.map(|t| t.max(1).to_string()).unwrap_or_default());
        self.inner.invoke(inv).await.map(Shared::Value)
    }

    async fn shared_swap(
        &self,
        name: &str,
        value: Option<&str>,
        ttl_ms: Millis,
    ) -> Result<Shared<Option<String>>, LedgerError> {
        let mut inv = self.inner.swap.prepare_invoke();
        inv.key(self.inner.shared_key(name))
            .arg(value.unwrap_or_default())
            .arg(ttl_ms.max(1).to_string());
        let old = self.inner.invoke(inv).await?;
        Ok(Shared::Value(Some(old).filter(|o| !o.is_empty())))
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
            for (id, what, at) in a.out {
                let o = match what {
                    EndWhat::Ending => EndOutcome::Ending { at: at as u64 },
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

    async fn lookup(&self, id: SeatId, now: Millis) -> Result<super::Lookup, LedgerError> {
        self.inner.at(now);
        let mut ended = false;
        for pool in self.inner.all_pools() {
            let a = self.inner.call(&pool, "lookup", &[id.to_string()]).await?;
            match (a.kind, &a.seat) {
                (Kind::Live, Some(r)) => return Ok(super::Lookup::Live(r.record(&pool.spec.key)?)),
                (Kind::Ended, _) => ended = true,
                (Kind::Unknown, _) => {}
                (k, _) => return Err(corrupt(format!("unexpected answer {k:?} to lookup"))),
            }
        }
        Ok(if ended {
            super::Lookup::Ended
        } else {
            super::Lookup::Unknown
        })
    }

    async fn sessions(&self, now: Millis) -> Result<Vec<SeatRecord>, LedgerError> {
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

    async fn usage(&self, now: Millis) -> Result<Vec<PoolUsage>, LedgerError> {
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
            self.inner.views.insert(
                pool.spec.key.clone(),
                View {
                    capacity,
                    held: in_use,
                    at: Instant::now(),
                },
            );
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
            });
        }
        Ok(out)
    }

    /// `None` with no view, or one older than [`STALE_AFTER`]: the store stopped answering.
    fn available(&self, pool: &PoolKey, _now: Millis) -> Option<u32> {
        self.inner.start_refresher();
        let v = self.inner.views.get(pool).filter(|v| v.fresh())?;
        Some(v.capacity.saturating_sub(v.held))
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

    async fn healthy(&self) -> bool {
        let conn = match self.inner.conn().await {
            Ok(c) => c,
            Err(_) => return false,
        };
        let ping = async {
            let cmd = redis::cmd("PING");
            match conn {
                Conn::Managed(mut c) => cmd.query_async::<String>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<String>(&mut c).await,
                Conn::Plain(mut c) => cmd.query_async::<String>(&mut c).await,
            }
        };
        let ok = match tokio::time::timeout(CALL_TIMEOUT, ping).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("ping timed out".into()),
        };
        let up = ok.is_none();
        self.inner.set_health(up, ok);
        up && self.inner.write_error().is_none()
    }

    fn view_age(&self, pool: &PoolKey, _now: Millis) -> Option<Millis> {
        self.inner
            .views
            .get(pool)
            .map(|v| v.at.elapsed().as_millis() as Millis)
    }

    fn describe(&self) -> serde_json::Value {
        let h = self
            .inner
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({
            "kind": "redis",
            "target": self.inner.target,
            "up": h.up,
            "since": h.changed_at,
            "last_error": h.last_error,
            "write_error": h.write_error,
            "cached_sessions": self.inner.cache.len(),
        })
    }

    fn last_known(&self, session: &SessionKey) -> Option<bool> {
        Some(self.inner.cache.contains_key(session))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Result<Answer, serde_json::Error> {
        serde_json::from_str(json)
    }

    const REC: &str = r#"{"id":"00000000000000a1","session":"","started_at":1,"last_activity":2,"last_heartbeat":0,"state":"active"}"#;

    #[test]
    fn a_known_answer_reads() {
        let a = answer(&format!(
            r#"{{"kind":"held","seat":{REC},"released":{{}},"out":[["00000000000000a1","ending",5]]}}"#
        ))
        .unwrap();
        assert_eq!(a.kind, Kind::Held);
        let seat = a.seat.unwrap();
        assert_eq!(seat.id, SeatId(0xa1));
        assert_eq!(seat.state, SeatState::Active);
        assert_eq!(a.out, vec![(SeatId(0xa1), EndWhat::Ending, 5.0)]);
        assert_eq!(seat.record(&PoolKey::new("p", "q")).unwrap().session, None);
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        assert!(answer(r#"{"kind":"granted_maybe"}"#).is_err());
    }

    #[test]
    fn an_unknown_seat_state_is_refused() {
        let rec = REC.replace("\"active\"", "\"actve\"");
        assert!(serde_json::from_str::<Rec>(&rec).is_err());
    }

    #[test]
    fn an_unknown_release_reason_is_refused() {
        let a = format!(r#"{{"kind":"ok","released":[{{"seat":{REC},"reason":"tired"}}]}}"#);
        assert!(answer(&a).is_err());
    }

    #[test]
    fn an_unknown_end_outcome_is_refused() {
        assert!(answer(r#"{"kind":"ended","out":[["00000000000000a1","maybe",0]]}"#).is_err());
    }

    #[test]
    fn a_bad_seat_id_is_refused() {
        let rec = REC.replace("00000000000000a1", "seat-one");
        assert!(serde_json::from_str::<Rec>(&rec).is_err());
        assert!(answer(r#"{"kind":"seat","id":"xyz"}"#).is_err());
    }

    #[test]
    fn a_negative_or_fractional_count_is_read_strictly() {
        assert!(answer(r#"{"kind":"view","held":-1}"#).is_err());
        assert_eq!(answer(r#"{"kind":"view","held":3.0}"#).unwrap().held, 3);
    }

    #[test]
    fn an_unknown_gone_reason_is_refused() {
        assert_eq!(parse_gone("unknown").unwrap(), GoneWhy::Unknown);
        assert_eq!(parse_gone("paused").unwrap(), GoneWhy::Paused);
        assert_eq!(
            parse_gone("app_logout").unwrap(),
            GoneWhy::Released(ReleaseReason::AppLogout)
        );
        assert!(matches!(parse_gone("tired"), Err(LedgerError::Corrupt(_))));
        assert!(matches!(parse_gone(""), Err(LedgerError::Corrupt(_))));
    }

    #[test]
    fn an_unknown_or_missing_full_reason_is_refused() {
        assert_eq!(parse_full(Some("pool")).unwrap(), FullReason::Pool);
        assert_eq!(parse_full(Some("user_max")).unwrap(), FullReason::UserMax);
        assert!(matches!(
            parse_full(Some("full")),
            Err(LedgerError::Corrupt(_))
        ));
        assert!(matches!(parse_full(None), Err(LedgerError::Corrupt(_))));
    }

    #[test]
    fn a_bad_session_key_is_refused() {
        assert_eq!(parse_session("").unwrap(), None);
        let k = SessionKey::new("p", "c");
        assert_eq!(parse_session(&k.hex()).unwrap(), Some(k));
        assert!(matches!(parse_session("zz"), Err(LedgerError::Corrupt(_))));
        let rec = REC.replace(r#""session":"""#, r#""session":"not-hex""#);
        let rec: Rec = serde_json::from_str(&rec).unwrap();
        assert!(matches!(
            rec.record(&PoolKey::new("p", "q")),
            Err(LedgerError::Corrupt(_))
        ));
    }

    #[test]
    fn an_unreadable_stored_seat_fails_the_listing() {
        let a = answer(&format!(
            r#"{{"kind":"list","seats":[{:?},"{{\"id\":1}}"]}}"#,
            REC
        ))
        .unwrap();
        assert!(matches!(seats_of(&a), Err(LedgerError::Corrupt(_))));
        let a = answer(&format!(r#"{{"kind":"list","seats":[{REC:?}]}}"#)).unwrap();
        assert_eq!(seats_of(&a).unwrap().len(), 1);
    }
}
