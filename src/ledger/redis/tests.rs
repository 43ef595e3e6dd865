//! The script's holder indexes against the pool they index (needs Redis, like the contract
//! suite: `SEATGATE_TEST_REDIS`, default redis://127.0.0.1:6379).

use super::*;
use crate::domain::{Grant, GroupLimit};
use std::collections::BTreeMap;

fn url() -> String {
    std::env::var("SEATGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// What the indexes hold: total, holders per user, seat members, overflow seats, lease members.
type Index = (
    i64,
    BTreeMap<String, i64>,
    Vec<Vec<u8>>,
    Vec<String>,
    Vec<Vec<u8>>,
);

/// A ledger on a key prefix of its own, deleted when dropped.
struct Fixture {
    l: RedisLedger,
    prefix: String,
    con: redis::Connection,
}

impl Fixture {
    fn new(specs: &[PoolSpec]) -> Self {
        let prefix = format!("tix{:x}", rand::random::<u64>());
        let cfg = RedisConfig {
            target: RedisTarget::Single(url()),
            prefix: prefix.clone(),
        };
        let l = RedisLedger::new(&cfg, Arc::new(super::super::NoObserver)).unwrap();
        l.use_caller_clock(true);
        l.configure(specs);
        let con = redis::Client::open(url())
            .unwrap()
            .get_connection()
            .unwrap();
        Fixture { l, prefix, con }
    }

    fn key(&self, pool: &PoolKey, name: &str) -> String {
        format!("{}:{name}", pool_tag(&self.prefix, pool))
    }

    /// What the indexes hold: total, holders per user, seat members, overflow seats.
    fn index(&mut self, pool: &PoolKey) -> Index {
        let (meta, user, seat, over) = (
            self.key(pool, "ixmeta"),
            self.key(pool, "ixuser"),
            self.key(pool, "ixseat"),
            self.key(pool, "ixover"),
        );
        let total: Option<i64> = redis::cmd("HGET")
            .arg(&meta)
            .arg("total")
            .query(&mut self.con)
            .unwrap();
        let users: BTreeMap<String, i64> = redis::cmd("HGETALL")
            .arg(&user)
            .query(&mut self.con)
            .unwrap();
        let seats: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(&seat)
            .arg(0)
            .arg(-1)
            .query(&mut self.con)
            .unwrap();
        let mut overs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&over)
            .query(&mut self.con)
            .unwrap();
        overs.sort();
        let leases: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(self.key(pool, "ixlease"))
            .arg(0)
            .arg(-1)
            .query(&mut self.con)
            .unwrap();
        (total.unwrap_or(0), users, seats, overs, leases)
    }

    /// How many times the indexes of `pool` were rebuilt.
    fn rebuilds(&mut self, pool: &PoolKey) -> i64 {
        let n: Option<i64> = redis::cmd("HGET")
            .arg(self.key(pool, "ixmeta"))
            .arg("rebuilds")
            .query(&mut self.con)
            .unwrap();
        n.unwrap_or(0)
    }

    /// Whether the indexes of `pool` are built (a rebuild under way has no version yet).
    fn built(&mut self, pool: &PoolKey) -> bool {
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.key(pool, "ixmeta"))
            .arg("version")
            .query(&mut self.con)
            .unwrap();
        v.is_some()
    }

    /// The indexes as a full pass over the pool builds them (the version key dropped forces
    /// one; calls that change nothing carry it through, a slice each).
    async fn rebuilt(&mut self, pool: &PoolKey) -> Index {
        let _: () = redis::cmd("HDEL")
            .arg(self.key(pool, "ixmeta"))
            .arg("version")
            .query(&mut self.con)
            .unwrap();
        let p = self.l.inner.pool(pool).unwrap();
        // A cancel of no lease changes nothing but runs the index check.
        for _ in 0..1000 {
            self.l
                .inner
                .eval(&p, "cancel", &["none".into()])
                .await
                .unwrap();
            if self.built(pool) {
                break;
            }
        }
        self.index(pool)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.prefix))
            .query(&mut self.con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut self.con);
        }
    }
}

fn pool_spec(name: &str, seats: u32, per: SeatsPer) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("ix", name),
        grants: vec![Grant {
            seats,
            not_before: None,
            expires: None,
        }],
        idle_timeout: 5_000,
        max_lifetime: 40_000,
        presence_timeout: None,
        standby_timeout: 2_000,
        seats_per: per,
        max_sessions: Some(2),
        groups: vec![
            GroupLimit {
                name: "g".into(),
                users: ["g1", "g2"].iter().map(|u| u.to_string()).collect(),
                reserve: 1,
                max: Some(2),
            },
            GroupLimit {
                name: "h".into(),
                users: ["g2", "h1"].iter().map(|u| u.to_string()).collect(),
                reserve: 0,
                max: Some(1),
            },
        ],
        overflow_ms: Some(3_000),
        queue: None,
    }
}

fn claim(pool: &PoolKey, user: &str, device: &str, lease_id: u64) -> Claim {
    Claim {
        pool: pool.clone(),
        user: (!user.is_empty()).then(|| user.to_string()),
        device: (!device.is_empty()).then(|| device.to_string()),
        client: "web".into(),
        lease_id,
    }
}

/// After every operation of a random run (logins, leases left in flight or cancelled,
/// releases, pauses, resumes, ends, uncounted sessions, expiries, sweeps), what the script
/// kept up call by call equals what one full pass over the pool builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_kept_up_equal_a_rebuild() {
    let specs = [
        pool_spec("dev", 3, SeatsPer::UserDevice),
        pool_spec("user", 3, SeatsPer::User),
    ];
    let mut f = Fixture::new(&specs);
    let users = ["", "a", "b", "g1", "g2", "h1"];
    let devices = ["", "d1", "d2"];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut now = 1_000u64;
    let mut sessions: Vec<(PoolKey, SessionKey)> = Vec::new();
    let mut ids: Vec<SeatId> = Vec::new();
    for step in 0..400u64 {
        let pool = specs[next(2) as usize].key.clone();
        let c = claim(
            &pool,
            users[next(users.len() as u64) as usize],
            devices[next(devices.len() as u64) as usize],
            step,
        );
        let session = SessionKey::new("ix", &step.to_string());
        let rebuilds: Vec<i64> = specs.iter().map(|s| f.rebuilds(&s.key)).collect();
        match next(10) {
            0..=2 => {
                if let Reservation::Granted(lease) = f.l.reserve(&c, now).await.unwrap() {
                    match next(4) {
                        0 => {} // left in flight until it lapses
                        1 => f.l.cancel(&lease).await,
                        _ => {
                            if let Ok(id) = f.l.commit(&lease, &c, session, now).await {
                                ids.push(id);
                                sessions.push((pool.clone(), session));
                            }
                        }
                    }
                }
            }
            3 if !sessions.is_empty() => {
                let (_, s) = sessions[next(sessions.len() as u64) as usize];
                f.l.release(&s, ReleaseReason::Logout, now).await.unwrap();
            }
            4 if !ids.is_empty() => {
                let id = ids[next(ids.len() as u64) as usize];
                if next(2) == 0 {
                    f.l.pause(id, now).await.unwrap();
                } else {
                    f.l.resume(id, now).await.unwrap();
                }
            }
            5 if !ids.is_empty() => {
                let id = ids[next(ids.len() as u64) as usize];
                f.l.end(&[id], next(2) * 1_000, "test", now).await.unwrap();
            }
            6 => {
                let state = if next(2) == 0 {
                    SeatState::Exempt
                } else {
                    SeatState::Named
                };
                if let Ok(id) = f.l.admit_uncounted(&c, state, session, now).await {
                    ids.push(id);
                    sessions.push((pool.clone(), session));
                }
            }
            7 if !sessions.is_empty() => {
                let (_, s) = sessions[next(sessions.len() as u64) as usize];
                let _ = f.l.touch(&s, now).await.unwrap();
            }
            8 => {
                f.l.sweep(now).await.unwrap();
            }
            _ => now += next(3_000),
        }
        for (s, before) in specs.iter().zip(rebuilds) {
            // What the script kept up passes its own checks: no rebuild of a sound index.
            assert_eq!(
                f.rebuilds(&s.key),
                before,
                "step {step}, pool {}",
                s.key.pool
            );
            let kept = f.index(&s.key);
            let built = f.rebuilt(&s.key).await;
            assert_eq!(kept, built, "step {step}, pool {}", s.key.pool);
        }
    }
}

/// A replica still running the script that keeps no index (a rolling upgrade) adds or drops
/// seats behind the indexes' back: the next call finds the total off and counts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_written_around_the_indexes_are_counted() {
    let mut spec = pool_spec("old", 5, SeatsPer::Session);
    spec.max_sessions = Some(1);
    spec.groups.clear();
    let pool = spec.key.clone();
    let mut f = Fixture::new(&[spec]);
    let now = 1_000u64;
    // A first call builds the (empty) indexes.
    f.l.sweep(now).await.unwrap();
    // What the old script's commit writes for a seat of ann.
    let rec = serde_json::json!({ "id": "00000000000000ab", "user": "ann", "device": "", "client": "web",
        "session": format!("{:032x}", 7), "started_at": now, "last_activity": now, "last_heartbeat": 0,
        "last_request": now, "last_input": 0, "state": "standby", "ending_at": 0, "overflow": false,
        "ended_by": "" });
    let (seats, z, sess) = (
        f.key(&pool, "seats"),
        f.key(&pool, "z"),
        f.key(&pool, "sess"),
    );
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&seats)
        .arg("00000000000000ab")
        .arg(rec.to_string())
        .cmd("ZADD")
        .arg(&z)
        .arg(now + 2_000)
        .arg("00000000000000ab")
        .cmd("HSET")
        .arg(&sess)
        .arg(format!("{:032x}", 7))
        .arg("00000000000000ab")
        .query(&mut f.con)
        .unwrap();
    match f.l.reserve(&claim(&pool, "ann", "", 1), now).await.unwrap() {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::UserMax),
        r => panic!("ann holds one seat (max_sessions 1), got {r:?}"),
    }
    // The old script releases it: ann may log in again.
    let _: () = redis::pipe()
        .cmd("ZREM")
        .arg(&z)
        .arg("00000000000000ab")
        .cmd("HDEL")
        .arg(&seats)
        .arg("00000000000000ab")
        .query(&mut f.con)
        .unwrap();
    assert!(matches!(
        f.l.reserve(&claim(&pool, "ann", "", 2), now).await.unwrap(),
        Reservation::Granted(_)
    ));
    // While the older replica may still be writing, the pool is walked, not rebuilt per call;
    // a minute after the last drift the indexes are built again.
    let built = f.rebuilds(&pool);
    f.l.sweep(now + 59_000).await.unwrap();
    assert_eq!(f.rebuilds(&pool), built);
    f.l.sweep(now + 60_000).await.unwrap();
    assert_eq!(f.rebuilds(&pool), built + 1);
    // Ann's lease lapsed meanwhile: nothing holds.
    assert_eq!(f.index(&pool).0, 0);
}

/// A pool that reads no index (seats per session, no groups, max_sessions or overflow) keeps
/// none: its admissions count with two cardinalities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_pool_keeps_no_index() {
    let mut spec = pool_spec("plain", 5, SeatsPer::Session);
    spec.max_sessions = None;
    spec.groups.clear();
    spec.overflow_ms = None;
    let pool = spec.key.clone();
    let mut f = Fixture::new(&[spec]);
    for i in 0..3u64 {
        let c = claim(&pool, "ann", "", i);
        let Reservation::Granted(lease) = f.l.reserve(&c, 1_000).await.unwrap() else {
            panic!("full")
        };
        f.l.commit(&lease, &c, SessionKey::new("ix", &i.to_string()), 1_000)
            .await
            .unwrap();
    }
    let (total, users, seats, over, leases) = f.index(&pool);
    assert_eq!(
        (total, users.len(), seats.len(), over.len(), leases.len()),
        (0, 0, 0, 0, 0)
    );
}

/// An older replica that adds one seat and drops another between two calls of this script
/// leaves the indexes' total right: the sweep's walk over the indexes finds the members off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_written_around_the_indexes_is_found_by_the_sweep() {
    let mut spec = pool_spec("swap", 5, SeatsPer::Session);
    spec.max_sessions = Some(1);
    spec.groups.clear();
    let pool = spec.key.clone();
    let mut f = Fixture::new(&[spec]);
    let now = 1_000u64;
    let bob = claim(&pool, "bob", "", 1);
    let Reservation::Granted(lease) = f.l.reserve(&bob, now).await.unwrap() else {
        panic!("full")
    };
    let bob_seat =
        f.l.commit(&lease, &bob, SessionKey::new("ix", "bob"), now)
            .await
            .unwrap()
            .to_string();
    // The old script: ann's seat in, bob's out (his cookie forgotten too).
    let rec = serde_json::json!({ "id": "00000000000000ab", "user": "ann", "device": "", "client": "web",
        "session": format!("{:032x}", 7), "started_at": now, "last_activity": now, "last_heartbeat": 0,
        "last_request": now, "last_input": 0, "state": "standby", "ending_at": 0, "overflow": false,
        "ended_by": "" });
    let (seats, z) = (f.key(&pool, "seats"), f.key(&pool, "z"));
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&seats)
        .arg("00000000000000ab")
        .arg(rec.to_string())
        .cmd("ZADD")
        .arg(&z)
        .arg(now + 2_000)
        .arg("00000000000000ab")
        .cmd("ZREM")
        .arg(&z)
        .arg(&bob_seat)
        .cmd("HDEL")
        .arg(&seats)
        .arg(&bob_seat)
        .query(&mut f.con)
        .unwrap();
    f.l.sweep(now).await.unwrap();
    match f.l.reserve(&claim(&pool, "ann", "", 2), now).await.unwrap() {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::UserMax),
        r => panic!("ann holds one seat (max_sessions 1), got {r:?}"),
    }
    assert!(matches!(
        f.l.reserve(&claim(&pool, "bob", "", 3), now).await.unwrap(),
        Reservation::Granted(_)
    ));
}

/// Every key of a pool, the line's included, carries the pool's hash tag: on a Redis Cluster
/// one script call touches one slot.
#[test]
fn every_key_of_a_pool_is_in_its_slot() {
    let pool = PoolKey::new("crm", "de{fau}lt");
    let tag = pool_tag("sg", &pool);
    let keys = pool_keys("sg", &pool);
    assert_eq!(keys.len(), 24);
    for k in &keys {
        // Redis hashes the text between the first '{' and the next '}'.
        let open = k.find('{').unwrap();
        let close = open + k[open..].find('}').unwrap();
        assert_eq!(&k[open..=close], tag, "{k}");
    }
    for name in [
        "qz", "qt", "qwait", "qpoll", "qjoin", "qready", "qid", "qrate",
    ] {
        assert!(keys.contains(&format!("{tag}:{name}")), "{name}");
    }
}

impl Fixture {
    /// The line's own indexes agree with its records: every ticket is in the line once, waiting
    /// (and watched for abandonment and max_wait) or ready (its seat a lease in pend until its
    /// ready_until); the public ids lead to them. Returns the tickets (hex → record).
    fn line_sound(
        &mut self,
        pool: &PoolKey,
        now: Millis,
        step: u64,
    ) -> BTreeMap<String, serde_json::Value> {
        let zset = |f: &mut Self, name: &str| -> BTreeMap<String, f64> {
            redis::cmd("ZRANGE")
                .arg(f.key(pool, name))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut f.con)
                .unwrap()
        };
        let raw: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(pool, "qt"))
            .query(&mut self.con)
            .unwrap();
        let tickets: BTreeMap<String, serde_json::Value> = raw
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap()))
            .collect();
        let ids: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(pool, "qid"))
            .query(&mut self.con)
            .unwrap();
        let (line, wait, ready) = (zset(self, "qz"), zset(self, "qwait"), zset(self, "qready"));
        let (polls, joins, pend) = (zset(self, "qpoll"), zset(self, "qjoin"), zset(self, "pend"));
        let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&line),
            tickets.keys().cloned().collect::<Vec<_>>(),
            "step {step}"
        );
        assert_eq!(ids.len(), tickets.len(), "step {step}");
        assert_eq!(wait.len() + ready.len(), line.len(), "step {step}");
        assert_eq!(
            (keys(&polls), keys(&joins)),
            (keys(&wait), keys(&wait)),
            "step {step}"
        );
        for (k, t) in &tickets {
            assert_eq!(ids[t["id"].as_str().unwrap()], *k, "step {step}");
            if t["state"] == "ready" {
                let until = t["ready_until"].as_f64().unwrap();
                assert_eq!(ready[k], until, "step {step}");
                if until > now as f64 {
                    assert_eq!(
                        pend.get(t["lease"].as_str().unwrap()),
                        Some(&until),
                        "step {step}"
                    );
                }
            } else {
                assert_eq!(wait[k], line[k], "step {step}");
                assert_eq!(polls[k], t["last_poll"].as_f64().unwrap(), "step {step}");
            }
        }
        tickets
    }
}

/// A random run of the line (joins, polls, the ticket's login taking its held seat or failing,
/// admin removals, newcomers, releases, sweeps, time) on pools whose admission reads the holder
/// indexes, barging off and on: after every step the indexes equal a rebuild (promotions and
/// removals keep them up like any lease), the line's own indexes agree with its records, and
/// no more seats are held than the pool has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_keeps_the_indexes_up() {
    let specs: Vec<PoolSpec> = [("off", false), ("on", true)]
        .into_iter()
        .map(|(name, barging)| {
            let mut s = pool_spec(name, 2, SeatsPer::User);
            // Capacity exact: no allowance over it.
            s.overflow_ms = None;
            s.queue = Some(crate::domain::QueueSpec {
                hold: 3_000,
                abandon_after: 4_000,
                max_wait: 20_000,
                max_length: 4,
                barging,
            });
            s
        })
        .collect();
    let mut f = Fixture::new(&specs);
    let users = ["a", "b", "g1", "g2", "h1"];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut now = 1_000u64;
    // A first call builds the (empty) indexes.
    f.l.sweep(now).await.unwrap();
    let mut sessions: Vec<SessionKey> = Vec::new();
    // What the run went through: promotions seen, held seats taken, removals.
    let (mut ready, mut admitted, mut removed) = (0, 0, 0);
    for step in 0..400u64 {
        let spec = &specs[next(2) as usize];
        let pool = spec.key.clone();
        let user = users[next(users.len() as u64) as usize];
        let ticket = TicketKey::new(&pool, &format!("t{}", next(6)));
        let tc = claim(&pool, user, "", ticket.lease_id());
        let rebuilds: Vec<i64> = specs.iter().map(|s| f.rebuilds(&s.key)).collect();
        match next(10) {
            0 | 1 => {
                if let Joined::Queued(q) = f.l.enqueue(&tc, ticket, now).await.unwrap() {
                    ready += (q.state == crate::domain::TicketState::Ready) as u32;
                }
            }
            2 => {
                if let Polled::Status(q) = f.l.poll(&pool, &ticket, now).await.unwrap() {
                    ready += (q.state == crate::domain::TicketState::Ready) as u32;
                }
            }
            3 => {
                // Mostly the login of a ticket that is ready.
                let line = f.l.queue(now).await.unwrap();
                let held = line
                    .iter()
                    .find(|t| t.pool == pool && t.state == crate::domain::TicketState::Ready);
                let (ticket, tc) = match held {
                    Some(t) => (t.key, claim(&pool, user, "", t.key.lease_id())),
                    None => (ticket, tc),
                };
                if let Reservation::Granted(lease) = f.l.reserve(&tc, now).await.unwrap() {
                    if next(3) == 0 {
                        // A wrong password: the hold stays.
                        f.l.cancel(&lease).await;
                    } else {
                        let session = SessionKey::new("ix", &step.to_string());
                        if f.l.commit(&lease, &tc, session, now).await.is_ok() {
                            let t = f.l.queue_admitted(&pool, &ticket, now).await.unwrap();
                            admitted += t.is_some() as u32;
                            sessions.push(session);
                        }
                    }
                }
            }
            4 => {
                let line = f.l.queue(now).await.unwrap();
                if !line.is_empty() {
                    let t = &line[next(line.len() as u64) as usize];
                    assert!(f.l.remove_ticket(t.id, now).await.unwrap().is_some());
                    removed += 1;
                }
            }
            5 => {
                let c = claim(&pool, user, "", 10_000 + step);
                if let Reservation::Granted(lease) = f.l.reserve(&c, now).await.unwrap() {
                    let session = SessionKey::new("ix", &step.to_string());
                    if f.l.commit(&lease, &c, session, now).await.is_ok() {
                        sessions.push(session);
                    }
                }
            }
            6 if !sessions.is_empty() => {
                let s = sessions[next(sessions.len() as u64) as usize];
                f.l.release(&s, ReleaseReason::Logout, now).await.unwrap();
            }
            7 => {
                f.l.sweep(now).await.unwrap();
            }
            _ => now += next(2_500),
        }
        for (s, before) in specs.iter().zip(rebuilds) {
            assert_eq!(
                f.rebuilds(&s.key),
                before,
                "step {step}, pool {}",
                s.key.pool
            );
            let kept = f.index(&s.key);
            let built = f.rebuilt(&s.key).await;
            assert_eq!(kept, built, "step {step}, pool {}", s.key.pool);
            let tickets = f.line_sound(&s.key, now, step);
            assert!(tickets.len() <= 4, "step {step}");
        }
        for u in f.l.usage(now).await.unwrap() {
            assert!(u.in_use <= u.capacity, "step {step}: {u:?}");
        }
    }
    assert!(
        ready > 10 && admitted > 5 && removed > 5,
        "{ready} {admitted} {removed}"
    );
}

/// Writes `n` active seats (users `u0`…`u39` in turn, sessions `{i:032x}`) straight into a
/// pool's keys, as the script stores them: a pool whose indexes were never built.
const FILL: &str = r#"
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 0, n - 1 do
  local id = string.format('%016x', i * 2 + 1)
  local sess = string.format('%032x', i)
  local r = { id = id, user = 'u' .. (i % 40), device = '', client = 'web', session = sess,
    started_at = now, last_activity = now, last_heartbeat = 0, last_request = now, last_input = 0,
    state = 'active', ending_at = 0, overflow = false, ended_by = '' }
  redis.call('HSET', KEYS[2], id, cjson.encode(r))
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
  redis.call('HSET', KEYS[3], sess, id)
end
return n
"#;

/// A pool for FILL's seats (they hold 10 minutes), counted through the indexes once the test
/// sets `max_sessions` (no groups, no overflow).
fn filled_spec(name: &str, seats: u32) -> PoolSpec {
    let mut spec = pool_spec(name, seats, SeatsPer::Session);
    spec.idle_timeout = 600_000;
    spec.max_lifetime = 3_600_000;
    spec.standby_timeout = 60_000;
    spec.groups.clear();
    spec.overflow_ms = None;
    spec
}

impl Fixture {
    /// `n` active seats for 10 minutes from `now`, written by FILL.
    fn fill(&mut self, pool: &PoolKey, now: Millis, n: u64) {
        let _: u64 = redis::Script::new(FILL)
            .key(self.key(pool, "z"))
            .key(self.key(pool, "seats"))
            .key(self.key(pool, "sess"))
            .arg(now)
            .arg(n)
            .arg(600_000)
            .invoke(&mut self.con)
            .unwrap();
    }

    /// Sweeps at `now` until the rebuild under way is through.
    async fn sweep_until_built(&mut self, pool: &PoolKey, now: Millis) {
        let mut calls = 0;
        while !self.built(pool) {
            self.l.sweep(now).await.unwrap();
            calls += 1;
            assert!(calls < 100, "the rebuild never ended");
        }
    }
}

/// A rebuild of a large pool is spread over calls (no call blocks Redis for the whole pool):
/// meanwhile the pool's capacity is exact, what the calls in between change is kept up, and the
/// indexes it ends with equal a full rebuild's (per-user counts exact again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_spread_over_calls_ends_equal_to_a_full_one() {
    const HELD: u64 = 20_000;
    let mut spec = filled_spec("big", HELD as u32 + 3);
    // Each of the 40 users holds PER seats: one more each.
    const PER: u64 = HELD / 40;
    spec.max_sessions = Some(PER as u32 + 1);
    let pool = spec.key.clone();
    let mut f = Fixture::new(&[spec]);
    let now = 1_000u64;
    f.fill(&pool, now, HELD);
    // The first call starts the rebuild and does a slice of it only.
    assert!(matches!(
        f.l.reserve(&claim(&pool, "u0", "", 1), now).await.unwrap(),
        Reservation::Granted(_)
    ));
    assert!(!f.built(&pool), "{HELD} holders indexed in one call");
    assert_eq!(f.rebuilds(&pool), 1);
    // A seat leaves (the first one, scanned or not) and three newcomers fill the pool exactly.
    let first = SessionKey::from_hex(&format!("{:032x}", 0)).unwrap();
    assert!(f
        .l
        .release(&first, ReleaseReason::Logout, now)
        .await
        .unwrap()
        .is_some());
    for i in 0..3u64 {
        let c = claim(&pool, &format!("new{i}"), "", 10 + i);
        let Reservation::Granted(lease) = f.l.reserve(&c, now).await.unwrap() else {
            panic!("newcomer {i} found the pool full")
        };
        if i < 2 {
            f.l.commit(&lease, &c, SessionKey::new("ix", &format!("new{i}")), now)
                .await
                .unwrap();
        }
    }
    match f
        .l
        .reserve(&claim(&pool, "late", "", 20), now)
        .await
        .unwrap()
    {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::Pool),
        r => panic!("the pool is full, got {r:?}"),
    }
    // The sweeps carry it through, over several calls.
    f.sweep_until_built(&pool, now).await;
    assert_eq!(f.rebuilds(&pool), 1);
    let kept = f.index(&pool);
    assert_eq!(kept.0, HELD as i64 + 3, "seats and the leases in flight");
    // u0: its seats less the first (released), and a lease.
    assert_eq!(kept.1.get("u0"), Some(&(PER as i64)));
    assert_eq!(kept.1.get("u1"), Some(&(PER as i64)));
    assert_eq!(kept, f.rebuilt(&pool).await);
    assert_eq!(f.rebuilds(&pool), 2);
    // Read from the indexes now: exact per user too (a second lease of u0 puts it at
    // max_sessions once a seat is free).
    match f.l.reserve(&claim(&pool, "u1", "", 30), now).await.unwrap() {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::Pool),
        r => panic!("the pool is full, got {r:?}"),
    }
    let second = SessionKey::from_hex(&format!("{:032x}", 1)).unwrap();
    f.l.release(&second, ReleaseReason::Logout, now)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        f.l.reserve(&claim(&pool, "u0", "", 31), now).await.unwrap(),
        Reservation::Granted(_)
    ));
    match f.l.reserve(&claim(&pool, "u0", "", 32), now).await.unwrap() {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::UserMax),
        r => panic!("u0 is at max_sessions, got {r:?}"),
    }
}

/// An older replica writing around a rebuild under way (a seat it adds, which the scan may or
/// may not meet): admission stays exact, and the rebuild either met the seat (built, equal to a
/// full rebuild) or ends with the total off, a drift like any other: the pool is walked and
/// rebuilt a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_written_around_stays_exact() {
    const HELD: u64 = 20_000;
    let mut spec = filled_spec("around", HELD as u32 + 2);
    spec.max_sessions = Some(1_000);
    let pool = spec.key.clone();
    let mut f = Fixture::new(&[spec]);
    let now = 1_000u64;
    f.fill(&pool, now, HELD);
    f.l.sweep(now).await.unwrap();
    assert!(!f.built(&pool));
    // The old script's commit: a seat the indexes are not told of.
    let rec = serde_json::json!({ "id": "ffffffffffffffab", "user": "ann", "device": "", "client": "web",
        "session": format!("{:032x}", 1u64 << 40), "started_at": now, "last_activity": now, "last_heartbeat": 0,
        "last_request": now, "last_input": 0, "state": "active", "ending_at": 0, "overflow": false,
        "ended_by": "" });
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(f.key(&pool, "seats"))
        .arg("ffffffffffffffab")
        .arg(rec.to_string())
        .cmd("ZADD")
        .arg(f.key(&pool, "z"))
        .arg(now + 600_000)
        .arg("ffffffffffffffab")
        .query(&mut f.con)
        .unwrap();
    for _ in 0..20 {
        f.l.sweep(now).await.unwrap();
    }
    assert_eq!(f.rebuilds(&pool), 1);
    // Exact whatever the scan met: one seat left, then full.
    assert!(matches!(
        f.l.reserve(&claim(&pool, "bob", "", 1), now).await.unwrap(),
        Reservation::Granted(_)
    ));
    match f.l.reserve(&claim(&pool, "cat", "", 2), now).await.unwrap() {
        Reservation::Full(full) => assert_eq!(full.reason, FullReason::Pool),
        r => panic!("the pool is full, got {r:?}"),
    }
    let later = if f.built(&pool) {
        now
    } else {
        // The scan missed it: a drift, walked for a minute, then rebuilt over calls.
        f.sweep_until_built(&pool, now + 60_000).await;
        assert_eq!(f.rebuilds(&pool), 2);
        now + 60_000
    };
    // The seats, ann's among them, and bob's lease unless it lapsed.
    let kept = f.index(&pool);
    let lease = i64::from(later == now);
    assert_eq!(kept.0, HELD as i64 + 1 + lease);
    assert_eq!(kept.1.get("ann"), Some(&1));
    assert_eq!(kept, f.rebuilt(&pool).await);
}
