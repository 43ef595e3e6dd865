//! One harness for every store: the same scenario runs against the memory store, the memory
//! store whose journal is closed and reopened between steps, and Redis. Time is an input: the
//! Redis store is told to use each call's `now` instead of `TIME`.

use seatgate::config::{Grant, RedisConfig, RedisTarget};
use seatgate::domain::SeatsPer;
use seatgate::domain::{
    Claim, Millis, PoolKey, PoolSpec, PoolUsage, ReleaseReason, Reservation, SeatId, SeatRecord,
    SessionKey,
};
use seatgate::ledger::memory::MemoryLedger;
use seatgate::ledger::redis::RedisLedger;
use seatgate::ledger::{LedgerObserver, SeatLedger};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Far from 0 so that "never" (0) and "at the start" differ.
pub const T0: Millis = 1_700_000_000_000;

pub fn s(n: u64) -> Millis {
    T0 + n * 1000
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Volatile,
    Journal,
    Redis,
}

pub fn redis_url() -> String {
    std::env::var("SEATGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of its own; its keys are deleted when dropped.
pub struct Prefix(pub String);

impl Prefix {
    fn new() -> Self {
        Prefix(format!("tl{:x}", rand::random::<u64>()))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(c) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut con) = c.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.0))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

/// Every release the store reported, with the record as it was; and every queue event.
#[derive(Default)]
pub struct Seen(
    Mutex<Vec<(SeatRecord, ReleaseReason)>>,
    pub  Mutex<
        Vec<(
            seatgate::domain::Ticket,
            seatgate::domain::QueueEvent,
            Millis,
        )>,
    >,
);

impl LedgerObserver for Seen {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason) {
        self.0.lock().unwrap().push((seat.clone(), reason));
    }

    fn queue_event(
        &self,
        t: &seatgate::domain::Ticket,
        ev: seatgate::domain::QueueEvent,
        at: Millis,
    ) {
        self.1.lock().unwrap().push((t.clone(), ev, at));
    }
}

impl Seen {
    pub fn of(&self, id: SeatId) -> Vec<(SeatRecord, ReleaseReason)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r.id == id)
            .cloned()
            .collect()
    }

    pub fn reasons(&self, id: SeatId) -> Vec<ReleaseReason> {
        self.of(id).into_iter().map(|(_, r)| r).collect()
    }

    pub fn all(&self) -> Vec<(SeatRecord, ReleaseReason)> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

pub struct Store {
    pub kind: Kind,
    pub specs: Vec<PoolSpec>,
    pub seen: Arc<Seen>,
    mem: Option<Arc<MemoryLedger>>,
    redis: Option<Arc<RedisLedger>>,
    dir: Option<tempfile::TempDir>,
    prefix: Option<Prefix>,
}

impl Store {
    pub async fn new(kind: Kind, specs: Vec<PoolSpec>, now: Millis) -> Store {
        let mut st = Store {
            kind,
            specs,
            seen: Arc::new(Seen::default()),
            mem: None,
            redis: None,
            dir: None,
            prefix: None,
        };
        match kind {
            Kind::Volatile => {
                let l = MemoryLedger::volatile(st.seen.clone());
                l.configure(&st.specs);
                st.mem = Some(Arc::new(l));
            }
            Kind::Journal => {
                st.dir = Some(tempfile::tempdir().unwrap());
                st.open(now).await;
            }
            Kind::Redis => {
                st.prefix = Some(Prefix::new());
                st.open(now).await;
            }
        }
        st
    }

    async fn open(&mut self, now: Millis) {
        match self.kind {
            Kind::Volatile => {}
            Kind::Journal => {
                let path = self.dir.as_ref().unwrap().path().join("seats.redb");
                let l = MemoryLedger::open(&path, &self.specs, self.seen.clone(), now)
                    .await
                    .unwrap();
                self.mem = Some(Arc::new(l));
            }
            Kind::Redis => {
                let cfg = RedisConfig {
                    target: RedisTarget::Single(redis_url()),
                    prefix: self.prefix.as_ref().unwrap().0.clone(),
                };
                let l = RedisLedger::new(&cfg, self.seen.clone()).unwrap();
                l.use_caller_clock(true);
                l.configure(&self.specs);
                self.redis = Some(Arc::new(l));
            }
        }
    }

    pub fn l(&self) -> &dyn SeatLedger {
        match (&self.mem, &self.redis) {
            (Some(m), _) => m.as_ref(),
            (_, Some(r)) => r.as_ref(),
            _ => unreachable!("store closed"),
        }
    }

    pub fn arc(&self) -> Arc<dyn SeatLedger> {
        match (&self.mem, &self.redis) {
            (Some(m), _) => m.clone(),
            (_, Some(r)) => r.clone(),
            _ => unreachable!("store closed"),
        }
    }

    pub fn mem(&self) -> Option<&MemoryLedger> {
        self.mem.as_deref()
    }

    pub fn redis(&self) -> Option<&RedisLedger> {
        self.redis.as_deref()
    }

    /// A clean restart: batched activity written, the store closed, opened again on the same
    /// data (the journal file; for Redis, a new ledger object on the same prefix).
    pub async fn restart(&mut self, now: Millis) {
        self.l().flush().await.unwrap();
        self.mem = None;
        self.redis = None;
        self.open(now).await;
    }

    /// A crash: the store goes away without a flush (what was journaled stays, batched
    /// activity does not), and is opened again.
    pub async fn crash(&mut self, now: Millis) {
        self.mem = None;
        self.redis = None;
        self.open(now).await;
    }

    /// Restart unless the store is volatile (it would forget everything).
    pub async fn checkpoint(&mut self, now: Millis) {
        if self.kind != Kind::Volatile {
            self.restart(now).await;
        }
    }

    pub async fn restart_with(&mut self, specs: Vec<PoolSpec>, now: Millis) {
        self.specs = specs;
        self.restart(now).await;
    }

    /// Another gateway replica on the same Redis data (Redis only).
    pub fn replica(&self) -> Option<RedisLedger> {
        let prefix = self.prefix.as_ref()?;
        let cfg = RedisConfig {
            target: RedisTarget::Single(redis_url()),
            prefix: prefix.0.clone(),
        };
        let l = RedisLedger::new(&cfg, self.seen.clone()).unwrap();
        l.use_caller_clock(true);
        l.configure(&self.specs);
        Some(l)
    }

    /// Brings the view behind `available()` up to date (Redis refreshes it in the background).
    pub async fn refresh(&self) {
        if let Some(r) = &self.redis {
            r.refresh_view().await;
        }
    }
}

pub fn spec(pool: &str, seats: u32) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("crm", pool),
        grants: vec![Grant {
            seats,
            not_before: None,
            expires: None,
        }],
        idle_timeout: 600_000,
        max_lifetime: 3_600_000,
        presence_timeout: Some(90_000),
        standby_timeout: 60_000,
        seats_per: SeatsPer::Session,
        max_sessions: None,
        groups: vec![],
        overflow_ms: None,
        queue: None,
    }
}

pub fn claim(pool: &str, user: &str) -> Claim {
    Claim {
        pool: PoolKey::new("crm", pool),
        user: Some(user.into()),
        device: None,
        client: "web".into(),
        lease_id: rand::random::<u64>() >> 1,
    }
}

pub fn key(cookie: &str) -> SessionKey {
    SessionKey::new("crm", cookie)
}

pub async fn login_with(l: &dyn SeatLedger, c: &Claim, cookie: &str, now: Millis) -> SeatId {
    match l.reserve(c, now).await.unwrap() {
        Reservation::Granted(lease) => l.commit(&lease, c, key(cookie), now).await.unwrap(),
        Reservation::Full(f) => panic!("no seat for {cookie}: {f:?}"),
    }
}

pub async fn login(
    l: &dyn SeatLedger,
    pool: &str,
    user: &str,
    cookie: &str,
    now: Millis,
) -> SeatId {
    login_with(l, &claim(pool, user), cookie, now).await
}

pub async fn usage(l: &dyn SeatLedger, pool: &str, now: Millis) -> PoolUsage {
    l.usage(now)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.pool == pool)
        .expect("pool listed")
}

pub async fn session(l: &dyn SeatLedger, id: SeatId, now: Millis) -> Option<SeatRecord> {
    l.sessions(now)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
}
