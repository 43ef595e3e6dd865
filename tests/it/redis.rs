//! Issue 7: the Redis store, against a real Redis (127.0.0.1:6379, or `SEATGATE_TEST_REDIS`).
//! Each test uses its own key prefix and deletes its keys; tests that restart Redis run their
//! own `redis-server` on a spare port.

use crate::harness::*;
use rand::{RngExt, SeedableRng};
use seatgate::config::{Grant, RedisConfig, RedisTarget};
use seatgate::domain::SeatsPer;
use seatgate::domain::{
    Claim, EndOutcome, FullReason, Gone, GroupLimit, PoolKey, PoolSpec, ReleaseReason, Reservation,
    SeatRecord, SeatState, SessionKey, Touch,
};
use seatgate::ledger::redis::RedisLedger;
use seatgate::ledger::{LedgerObserver, SeatLedger};
use seatgate::policy::admission::{self, Admit, Holders};
use seatgate::policy::seat::{deadline, expiry, SeatTimes};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn redis_url() -> String {
    std::env::var("SEATGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of its own; its keys are deleted when dropped.
pub struct Prefix {
    pub name: String,
    url: String,
}

impl Prefix {
    pub fn new() -> Self {
        Self::on(&redis_url())
    }

    pub fn on(url: &str) -> Self {
        Prefix {
            name: format!("t{:x}", rand::random::<u64>()),
            url: url.to_string(),
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(c) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = c.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}:*", self.name))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

/// Records releases, to check the observer hears of lazy expiry.
#[derive(Default)]
pub struct Seen(Mutex<Vec<ReleaseReason>>);
impl LedgerObserver for Seen {
    fn released(&self, _: &SeatRecord, reason: ReleaseReason) {
        self.0.lock().unwrap().push(reason);
    }
}

fn spec(pool: &str, seats: u32) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("crm", pool),
        grants: vec![Grant {
            seats,
            not_before: None,
            expires: None,
        }],
        idle_timeout: 600_000,
        max_lifetime: 3_600_000,
        presence_timeout: None,
        standby_timeout: 60_000,
        seats_per: SeatsPer::Session,
        max_sessions: None,
        groups: vec![],
        overflow_ms: None,
        queue: None,
    }
}

fn ledger(
    prefix: &Prefix,
    url: &str,
    specs: &[PoolSpec],
    obs: Arc<dyn LedgerObserver>,
) -> RedisLedger {
    let cfg = RedisConfig {
        target: RedisTarget::Single(url.to_string()),
        prefix: prefix.name.clone(),
    };
    let l = RedisLedger::new(&cfg, obs).unwrap();
    l.configure(specs);
    l
}

fn claim(pool: &str, user: &str, device: Option<&str>) -> Claim {
    Claim {
        pool: PoolKey::new("crm", pool),
        user: Some(user.into()),
        device: device.map(str::to_string),
        client: "web".into(),
        lease_id: rand::random(),
    }
}

async fn seat_login(l: &RedisLedger, c: &Claim, cookie: &str) -> Option<seatgate::domain::SeatId> {
    match l.reserve(c, 0).await.unwrap() {
        Reservation::Granted(lease) => Some(
            l.commit(&lease, c, SessionKey::new("crm", cookie), 0)
                .await
                .unwrap(),
        ),
        Reservation::Full(_) => None,
    }
}

async fn in_use(l: &RedisLedger, pool: &str) -> u32 {
    l.usage(0)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.pool == pool)
        .map_or(0, |u| u.in_use)
}

#[tokio::test]
async fn redis_rules_agree_with_rust() {
    let p = Prefix::new();
    let l = ledger(&p, &redis_url(), &[], Arc::new(Seen::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let names = ["a", "b", "c", "g1", "g2", "h1"];
    let states = [
        SeatState::Standby,
        SeatState::Active,
        SeatState::Ending,
        SeatState::Paused,
    ];
    for case in 0..300 {
        let mut s = spec("rules", rng.random_range(0..6));
        if rng.random_bool(0.3) {
            s.grants.push(Grant {
                seats: 2,
                not_before: Some(1_000),
                expires: Some(5_000),
            });
        }
        if rng.random_bool(0.5) {
            s.groups.push(GroupLimit {
                name: "g".into(),
                users: ["g1", "g2"].iter().map(|x| x.to_string()).collect(),
                reserve: rng.random_range(0..3),
                max: rng.random_bool(0.5).then(|| rng.random_range(0..3)),
            });
        }
        if rng.random_bool(0.3) {
            s.groups.push(GroupLimit {
                name: "h".into(),
                users: ["h1".to_string()].into(),
                reserve: 1,
                max: Some(1),
            });
        }
        s.max_sessions = rng.random_bool(0.3).then(|| rng.random_range(1..3));
        s.presence_timeout = rng.random_bool(0.5).then_some(300);
        s.idle_timeout = 1_000;
        s.max_lifetime = 8_000;
        s.standby_timeout = 500;
        let holders: Vec<Option<&str>> = (0..rng.random_range(0..7))
            .map(|_| {
                rng.random_bool(0.8)
                    .then(|| names[rng.random_range(0..names.len())])
            })
            .collect();
        let user = rng
            .random_bool(0.9)
            .then(|| names[rng.random_range(0..names.len())]);
        let now: u64 = rng.random_range(0..9_000);
        let overflow: Option<u64> = if rng.random_bool(0.3) {
            Some(rng.random_range(0..2))
        } else {
            None
        };
        let t = SeatTimes {
            started_at: rng.random_range(0..2_000),
            last_activity: rng.random_range(0..4_000),
            last_heartbeat: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..4_000)
            },
            state: states[rng.random_range(0..4)],
            ending_at: rng.random_bool(0.5).then(|| rng.random_range(0..6_000)),
        };
        let seat = serde_json::json!({
            "started_at": t.started_at, "last_activity": t.last_activity, "last_heartbeat": t.last_heartbeat,
            "state": t.state.as_str(), "ending_at": t.ending_at.unwrap_or(0),
        });
        let input = serde_json::json!({ "users": holders, "user": user, "now": now, "overflow_left": overflow, "seat": seat });
        let got = l.script_rules(&s, &input).await.unwrap();
        let want = admission::admit(&s, &Holders::new(holders.clone()), user, now, overflow);
        let lua = &got["admit"];
        match want {
            Admit::Seat => assert_eq!(lua["kind"], "seat", "case {case}: {input} {s:?}"),
            Admit::Overflow => assert_eq!(lua["kind"], "overflow", "case {case}: {input}"),
            Admit::Deny(f) => {
                let reason = match f.reason {
                    FullReason::Pool => "pool",
                    FullReason::GroupMax => "group_max",
                    FullReason::UserMax => "user_max",
                    FullReason::OverflowSpent => "overflow_spent",
                };
                assert_eq!(lua["kind"], "full", "case {case}: {input} {s:?}");
                assert_eq!(lua["reason"], reason, "case {case}: {input} {s:?}");
                assert_eq!(lua["in_use"], f.in_use, "case {case}");
                assert_eq!(lua["capacity"], f.capacity, "case {case}");
            }
        }
        let exp = expiry(&s, &t, now).map_or("", |r| r.as_str());
        assert_eq!(got["expiry"], exp, "case {case}: {t:?} at {now}");
        assert_eq!(got["deadline"], deadline(&s, &t), "case {case}: {t:?}");
    }
}

#[tokio::test]
async fn redis_ledger_contract() {
    let p = Prefix::new();
    let seen = Arc::new(Seen::default());
    let mut dev = spec("dev", 5);
    dev.seats_per = SeatsPer::UserDevice;
    let mut short = spec("short", 1);
    short.idle_timeout = 300;
    let l = ledger(
        &p,
        &redis_url(),
        &[spec("main", 2), dev, short],
        seen.clone(),
    );

    // A retried reserve with the same lease id takes one seat, not two.
    let c = claim("main", "ann", None);
    let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else {
        panic!("full")
    };
    let Reservation::Granted(again) = l.reserve(&c, 0).await.unwrap() else {
        panic!("retry denied")
    };
    assert_eq!(lease, again);
    assert_eq!(in_use(&l, "main").await, 1);
    let ann = SessionKey::new("crm", "ann-cookie");
    let id = l.commit(&lease, &c, ann, 0).await.unwrap();
    assert_eq!(
        l.commit(&lease, &c, ann, 0).await.unwrap(),
        id,
        "a retried commit keeps the seat"
    );
    assert_eq!(in_use(&l, "main").await, 1);
    assert!(seat_login(&l, &claim("main", "bob", None), "bob-cookie")
        .await
        .is_some());
    match l.reserve(&claim("main", "cat", None), 0).await.unwrap() {
        Reservation::Full(f) => {
            assert_eq!((f.in_use, f.capacity, f.reason), (2, 2, FullReason::Pool))
        }
        r => panic!("{r:?}"),
    }
    // Touch: standby → active; second touch comes from the cache.
    assert!(matches!(
        l.touch(&ann, 0).await.unwrap(),
        Touch::Held {
            state: SeatState::Active,
            ..
        }
    ));
    assert!(matches!(
        l.touch(&ann, 0).await.unwrap(),
        Touch::Held {
            state: SeatState::Active,
            ..
        }
    ));
    assert_eq!(in_use(&l, "main").await, 2);
    assert_eq!(
        l.available(&PoolKey::new("crm", "main"), 0),
        Some(0),
        "usage refreshed the view"
    );

    // Logout: seat freed, cookie tombstoned.
    let rec = l
        .release(&ann, ReleaseReason::Logout, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.id, id);
    assert_eq!(
        l.touch(&ann, 0).await.unwrap(),
        Touch::Gone(Gone::Released(ReleaseReason::Logout))
    );
    assert_eq!(in_use(&l, "main").await, 1);
    let cat = seat_login(&l, &claim("main", "cat", None), "cat-cookie")
        .await
        .unwrap();

    // End with grace, then again.
    let out = l.end(&[cat], 0, "admin", 0).await.unwrap();
    assert!(matches!(out[0].1, EndOutcome::Ending { .. }), "{out:?}");
    assert_eq!(
        l.end(&[cat], 0, "admin", 0).await.unwrap()[0].1,
        EndOutcome::AlreadyEnded
    );
    let cat_key = SessionKey::new("crm", "cat-cookie");
    assert_eq!(
        l.touch(&cat_key, 0).await.unwrap(),
        Touch::Gone(Gone::Released(ReleaseReason::Ended))
    );
    let bob = SessionKey::new("crm", "bob-cookie");
    let bob_id = match l.touch(&bob, 0).await.unwrap() {
        Touch::Held { id, .. } => id,
        t => panic!("{t:?}"),
    };
    let out = l.end(&[bob_id], 30_000, "admin", 0).await.unwrap();
    assert!(matches!(out[0].1, EndOutcome::Ending { .. }));
    assert!(matches!(
        l.touch(&bob, 0).await.unwrap(),
        Touch::Held {
            state: SeatState::Ending,
            ending_at: Some(_),
            ..
        }
    ));

    // Same user, same device: the re-login reuses the seat; the old cookie is replaced.
    let d = claim("dev", "dan", Some("dev1"));
    let first = seat_login(&l, &d, "dan-1").await.unwrap();
    let Reservation::Granted(lease) = l
        .reserve(&claim("dev", "dan", Some("dev1")), 0)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(lease.reuse, Some(first));
    assert_eq!(
        l.commit(&lease, &d, SessionKey::new("crm", "dan-2"), 0)
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        l.touch(&SessionKey::new("crm", "dan-1"), 0).await.unwrap(),
        Touch::Gone(Gone::Released(ReleaseReason::Replaced))
    );
    assert!(
        seat_login(&l, &claim("dev", "dan", Some("dev2")), "dan-3")
            .await
            .is_some(),
        "another device: another seat"
    );
    assert_eq!(in_use(&l, "dev").await, 2);

    // Pause frees the seat, resume takes it back.
    assert_eq!(
        l.pause(first, 0).await.unwrap(),
        seatgate::domain::PauseOutcome::Done
    );
    assert_eq!(in_use(&l, "dev").await, 1);
    assert_eq!(
        l.resume(first, 0).await.unwrap(),
        seatgate::domain::PauseOutcome::Done
    );
    assert_eq!(in_use(&l, "dev").await, 2);

    // Lazy expiry: an idle seat stops counting before any sweep and the observer hears of it.
    assert!(seat_login(&l, &claim("short", "eve", None), "eve")
        .await
        .is_some());
    assert!(seat_login(&l, &claim("short", "fay", None), "fay")
        .await
        .is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(in_use(&l, "short").await, 0);
    assert!(seat_login(&l, &claim("short", "fay", None), "fay")
        .await
        .is_some());
    assert!(seen.0.lock().unwrap().contains(&ReleaseReason::Idle));
    let listed = l.sessions(0).await.unwrap();
    assert!(
        listed.iter().all(|s| s.user.as_deref() != Some("eve")),
        "expired seats are never listed"
    );
    assert!(listed.iter().any(|s| s.user.as_deref() == Some("fay")));
}

/// Activity batched on one replica never revives a seat another replica ended.
#[tokio::test]
async fn redis_late_flush_does_not_revive() {
    let p = Prefix::new();
    let a = ledger(
        &p,
        &redis_url(),
        &[spec("main", 1)],
        Arc::new(Seen::default()),
    );
    let b = ledger(
        &p,
        &redis_url(),
        &[spec("main", 1)],
        Arc::new(Seen::default()),
    );
    let id = seat_login(&a, &claim("main", "ann", None), "ann")
        .await
        .unwrap();
    let k = SessionKey::new("crm", "ann");
    assert!(matches!(a.touch(&k, 0).await.unwrap(), Touch::Held { .. }));
    assert!(
        matches!(a.touch(&k, 0).await.unwrap(), Touch::Held { .. }),
        "cache hit: activity queued"
    );
    b.end(&[id], 0, "admin", 0).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(
        b.touch(&k, 0).await.unwrap(),
        Touch::Gone(Gone::Released(ReleaseReason::Ended))
    );
    assert_eq!(in_use(&b, "main").await, 0);
    // Replica a notices within the cache TTL.
    tokio::time::sleep(seatgate::ledger::redis::CACHE_TTL).await;
    assert_eq!(
        a.touch(&k, 0).await.unwrap(),
        Touch::Gone(Gone::Released(ReleaseReason::Ended))
    );
    assert!(seat_login(&b, &claim("main", "bob", None), "bob")
        .await
        .is_some());
}

/// Two ledgers (two replicas) racing 1,000 logins on 50 seats admit exactly 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_ledgers_race_exact() {
    let p = Prefix::new();
    let a = Arc::new(ledger(
        &p,
        &redis_url(),
        &[spec("main", 50)],
        Arc::new(Seen::default()),
    ));
    let b = Arc::new(ledger(
        &p,
        &redis_url(),
        &[spec("main", 50)],
        Arc::new(Seen::default()),
    ));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            seat_login(&l, &claim("main", &format!("u{i}"), None), &format!("c{i}"))
                .await
                .is_some()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap() as u32;
    }
    assert_eq!(admitted, 50);
    assert_eq!(in_use(&a, "main").await, 50);
    assert_eq!(in_use(&b, "main").await, 50);
}

#[tokio::test]
async fn redis_cluster_and_sentinel_configs_construct() {
    let ((_a, dead_a), (_b, dead_b)) = (refusing_port(), refusing_port());
    let dead = format!("redis://127.0.0.1:{dead_a}");
    let targets = [
        RedisTarget::Cluster(vec![dead.clone(), format!("redis://127.0.0.1:{dead_b}")]),
        RedisTarget::Sentinel {
            master: "mymaster".into(),
            urls: vec![dead.clone()],
        },
        RedisTarget::Single(dead.clone()),
    ];
    for target in targets {
        let l = RedisLedger::new(
            &RedisConfig {
                target: target.clone(),
                prefix: "x".into(),
            },
            Arc::new(Seen::default()),
        )
        .unwrap();
        l.configure(&[spec("main", 1)]);
        assert!(!l.healthy().await, "{target:?}");
        let err = l.reserve(&claim("main", "a", None), 0).await.unwrap_err();
        assert!(err.to_string().contains("store unavailable"), "{err}");
        assert!(l.touch(&SessionKey::new("crm", "x"), 0).await.is_err());
        assert_eq!(l.describe()["up"], false);
    }
}

// ---------------------------------------------------------------- gateways on Redis

pub const REDIS_CFG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
store:
  kind: redis
  redis: { url: "{redis}", prefix: "{prefix}" }
  sweep_interval: 200ms
  flush_interval: 200ms
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
      expired: login
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats_per: session
    seats: {seats}
    on_store_error: {policy}
"#;

pub fn redis_vars(
    up: &Upstream,
    url: &str,
    prefix: &Prefix,
    seats: u32,
    policy: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("upstream", up.addr.to_string()),
        ("redis", url.to_string()),
        ("prefix", prefix.name.clone()),
        ("seats", seats.to_string()),
        ("policy", policy.to_string()),
    ]
}

async fn get(g: &Gateway, sid: &str) -> u16 {
    match client()
        .get(g.url("/home"))
        .header("cookie", format!("SID={sid}"))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_exact_pool() {
    let up = upstream("SID").await;
    let p = Prefix::new();
    let vars = redis_vars(&up, &redis_url(), &p, 50, "fail_closed");
    let a = Arc::new(Gateway::start(REDIS_CFG, &vars).await);
    let mut b = Gateway::start(REDIS_CFG, &vars).await;
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..1000 {
        let url = if i % 2 == 0 {
            a.url("/login")
        } else {
            b.url("/login")
        };
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = client()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("username=u{i}&password={PASSWORD}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), set_cookie(&r, "SID"), i % 2)
        }));
    }
    let mut sessions = Vec::new();
    let mut denied = 0;
    for t in tasks {
        match t.await.unwrap() {
            (302, Some(sid), via) => sessions.push((sid, via)),
            (503, _, _) => denied += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sessions.len(), 50, "exactly the pool");
    assert_eq!(denied, 950);
    assert_eq!(
        up.seen.count("/login"),
        50,
        "denied logins never reach the app"
    );
    for g in [&*a, &b] {
        assert_eq!(g.in_use("crm").await, 50);
    }
    // A session made on one replica works on the other.
    let (sid0, via0) = sessions.iter().find(|(_, via)| *via == 0).cloned().unwrap();
    assert_eq!(get(&b, &sid0).await, 200);
    assert_eq!(get(&a, &sid0).await, 200);
    // Logout on one replica frees the seat for the other.
    assert_eq!(via0, 0);
    assert_eq!(login(&a, "late", PASSWORD, None).await.status(), 503);
    let r = b.get_with_sid("/logout", &sid0).await;
    assert_eq!(r.status(), 302);
    let r = login(&a, "late", PASSWORD, None).await;
    assert_eq!(r.status(), 302);
    let late = set_cookie(&r, "SID").unwrap();
    // Ended on one, seen by the other within the cache TTL.
    tokio::time::sleep(seatgate::ledger::redis::CACHE_TTL).await;
    assert_eq!(get(&a, &sid0).await, 302);

    // Kill replica b mid-load: the sessions it admitted stay valid through a.
    let mine: Vec<String> = sessions
        .iter()
        .filter(|(_, via)| *via == 1)
        .map(|(s, _)| s.clone())
        .collect();
    assert!(!mine.is_empty());
    let served_before = up.seen.count("/home");
    let load = {
        let a = a.clone();
        let mine = mine.clone();
        tokio::spawn(async move {
            let mut bad = Vec::new();
            for _ in 0..5 {
                for s in &mine {
                    let st = get(&a, s).await;
                    if st != 200 {
                        bad.push((s.clone(), st));
                    }
                }
            }
            bad
        })
    };
    // Mid-load: once the load's first requests have reached the app.
    assert!(
        eventually(Duration::from_secs(5), || async {
            up.seen.count("/home") > served_before
        })
        .await,
        "the load never started"
    );
    b.kill();
    let bad = load.await.unwrap();
    assert!(
        bad.is_empty(),
        "no session lost while a replica died: {bad:?}\n{}",
        a.log()
    );
    for s in mine.iter().chain([&late]) {
        assert_eq!(get(&a, s).await, 200);
    }
    assert_eq!(a.in_use("crm").await, 50);
}

/// Our own redis-server on a spare port, so it can be killed and restarted. redis-server
/// cannot be handed a bound socket, so it gets a `free_port()` number: `spawn` checks that
/// the server answering there is this very process (INFO's process_id), so a port lost to
/// another test fails at once with that reason instead of sharing someone else's Redis.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start(port: u16) -> OwnRedis {
        let port_s = port.to_string();
        Self::spawn(
            port,
            &[
                "--port",
                &port_s,
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ],
        )
        .await
    }

    /// `redis-server` with these arguments, listening on `port` (which the arguments set).
    pub async fn spawn(port: u16, args: &[&str]) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let pid = child.id();
        let mut me = OwnRedis {
            port,
            child: Some(child),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server on {port} exited ({status}): port taken?");
            }
            match redis_pid(port).await {
                Some(p) if p == pid => return me,
                Some(p) => panic!("port {port} is served by another redis-server (pid {p})"),
                None => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The process id of the Redis (or Sentinel) answering on `port`, if one answers.
async fn redis_pid(port: u16) -> Option<u32> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con =
        tokio::time::timeout(Duration::from_secs(1), c.get_multiplexed_async_connection())
            .await
            .ok()?
            .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn healthz(g: &Gateway) -> (u16, serde_json::Value) {
    let r = client().get(g.admin_url("/healthz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn redis_restart_applies_policy_then_pool_is_exact() {
    let up = upstream("SID").await;
    let port = free_port();
    let mut rs = OwnRedis::start(port).await;
    let p = Prefix::on(&rs.url());
    let closed = Gateway::start(REDIS_CFG, &redis_vars(&up, &rs.url(), &p, 3, "fail_closed")).await;
    let p2 = Prefix::on(&rs.url());
    let known = Gateway::start(REDIS_CFG, &redis_vars(&up, &rs.url(), &p2, 1, "last_known")).await;
    let p3 = Prefix::on(&rs.url());
    let open = Gateway::start(REDIS_CFG, &redis_vars(&up, &rs.url(), &p3, 1, "fail_open")).await;
    let mut sids = Vec::new();
    for u in ["ann", "bob", "cat"] {
        let r = login(&closed, u, PASSWORD, None).await;
        assert_eq!(r.status(), 302);
        let sid = set_cookie(&r, "SID").unwrap();
        assert_eq!(get(&closed, &sid).await, 200);
        sids.push(sid);
    }
    assert_eq!(login(&closed, "dan", PASSWORD, None).await.status(), 503);
    let k = set_cookie(&login(&known, "kim", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(get(&known, &k).await, 200);
    let o = set_cookie(&login(&open, "oli", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(get(&open, &o).await, 200);

    rs.kill();
    // The bound under test: once the cache TTL has passed, nothing is answered from the cache.
    tokio::time::sleep(seatgate::ledger::redis::CACHE_TTL + Duration::from_millis(200)).await;
    // fail_closed: sessions and logins get 503, nothing crashes, /healthz says why.
    assert_eq!(get(&closed, &sids[0]).await, 503);
    assert_eq!(login(&closed, "dan", PASSWORD, None).await.status(), 503);
    let (status, body) = healthz(&closed).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"], "down");
    assert_eq!(body["store_detail"]["kind"], "redis");
    assert_eq!(body["store_detail"]["up"], false);
    assert!(
        closed
            .metric(r#"seatgate_store_errors_total{policy="fail_closed",product="crm"}"#)
            .await
            >= 2.0,
        "{}",
        closed.metrics().await
    );
    // last_known: a session this replica saw holding a seat goes on; an unknown one does not.
    assert_eq!(get(&known, &k).await, 200);
    assert_eq!(get(&known, "never-seen").await, 503);
    // fail_open: everything goes through without a seat.
    assert_eq!(get(&open, &o).await, 200);
    let r = login(&open, "pat", PASSWORD, None).await;
    assert_eq!(r.status(), 302);
    let unseated = set_cookie(&r, "SID").unwrap();

    // Redis comes back empty (no persistence): known sessions take their seats back through
    // admission, and the pool is exact again.
    let _rs2 = OwnRedis::start(port).await;
    // Each replica notices on its own (its next store call or health probe): wait for all.
    let back = eventually(Duration::from_secs(10), || async {
        healthz(&closed).await.0 == 200
            && healthz(&known).await.0 == 200
            && healthz(&open).await.0 == 200
    })
    .await;
    assert!(back, "healthz never recovered: {}", closed.log());
    for s in &sids {
        assert_eq!(
            get(&closed, s).await,
            200,
            "a seated session survives the restart"
        );
    }
    assert_eq!(closed.in_use("crm").await, 3);
    assert_eq!(
        login(&closed, "dan", PASSWORD, None).await.status(),
        503,
        "never beyond capacity"
    );
    // fail_open: the seated session is restored; the one admitted during the outage never
    // held a seat and is sent to log in again (the pool of 1 is taken).
    assert_eq!(get(&open, &o).await, 200);
    assert_eq!(get(&open, &unseated).await, 302);
    let exact = eventually(Duration::from_secs(5), || async {
        get(&open, &o).await == 200 && open.in_use("crm").await == 1
    })
    .await;
    assert!(
        exact,
        "fail_open pool not exact again: {}",
        open.usage().await
    );
}

// ---------------------------------------------------------------- Sentinel and Cluster, live

/// The pool stays exact when the ledger finds its primary through Sentinel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_live_pool_is_exact() {
    let master = OwnRedis::start(free_port()).await;
    let dir = tempfile::tempdir().unwrap();
    let sport = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sport}\nbind 127.0.0.1\ndir {}\nsentinel monitor seatgate-test 127.0.0.1 {} 1\n",
            dir.path().display(),
            master.port
        ),
    )
    .unwrap();
    let _sentinel = OwnRedis::spawn(sport, &[conf.to_str().unwrap(), "--sentinel"]).await;
    let p = Prefix::on(&master.url());
    let cfg = RedisConfig {
        target: RedisTarget::Sentinel {
            master: "seatgate-test".into(),
            urls: vec![format!("redis://127.0.0.1:{sport}")],
        },
        prefix: p.name.clone(),
    };
    let l = RedisLedger::new(&cfg, Arc::new(Seen::default())).unwrap();
    l.configure(&[spec("main", 2)]);
    assert!(
        eventually(Duration::from_secs(5), || async { l.healthy().await }).await,
        "ledger never reached the primary through Sentinel: {}",
        l.describe()
    );
    let mut admitted = 0;
    for i in 0..5 {
        admitted += seat_login(&l, &claim("main", &format!("u{i}"), None), &format!("c{i}"))
            .await
            .is_some() as u32;
    }
    assert_eq!(admitted, 2);
    assert_eq!(in_use(&l, "main").await, 2);
    // The seats really live on the primary Sentinel named.
    let c = redis::Client::open(master.url()).unwrap();
    let mut con = c
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:*", p.name))
        .query(&mut con)
        .unwrap();
    assert!(!keys.is_empty(), "no seat keys on the primary");
}

/// A three-node Redis Cluster: each pool's keys share one hash slot, so every admission is
/// one atomic script even though pools land on different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_live_pools_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        // The cluster bus is port + 10000 unless set: above 55535 that is no port at all.
        let (port, bus) = (free_port(), free_port());
        let (port_s, bus_s, conf) = (
            port.to_string(),
            bus.to_string(),
            format!("nodes-{port}.conf"),
        );
        nodes.push(
            OwnRedis::spawn(
                port,
                &[
                    "--port",
                    &port_s,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir_s,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-port",
                    &bus_s,
                ],
            )
            .await,
        );
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ready = eventually(Duration::from_secs(10), || async {
        nodes.iter().all(|n| {
            let out = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
        })
    })
    .await;
    assert!(ready, "cluster did not become ready");

    let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}")).collect();
    let cfg = RedisConfig {
        target: RedisTarget::Cluster(urls),
        prefix: "cl".into(),
    };
    let pools: Vec<String> = (0..4).map(|i| format!("pool{i}")).collect();
    let specs: Vec<PoolSpec> = pools.iter().map(|p| spec(p, 3)).collect();
    let a = Arc::new(RedisLedger::new(&cfg, Arc::new(Seen::default())).unwrap());
    let b = Arc::new(RedisLedger::new(&cfg, Arc::new(Seen::default())).unwrap());
    a.configure(&specs);
    b.configure(&specs);
    assert!(
        eventually(Duration::from_secs(5), || async { a.healthy().await }).await,
        "{}",
        a.describe()
    );
    let mut tasks = Vec::new();
    for i in 0..80 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let pool = pools[i % pools.len()].clone();
        tasks.push(tokio::spawn(async move {
            seat_login(&l, &claim(&pool, &format!("u{i}"), None), &format!("c{i}"))
                .await
                .is_some()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap() as u32;
    }
    assert_eq!(admitted, 3 * pools.len() as u32);
    for p in &pools {
        assert_eq!(in_use(&a, p).await, 3, "{p}");
    }
    // The pools did spread over more than one node (else this test proves nothing about slots).
    let holders = nodes
        .iter()
        .filter(|n| {
            let out = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "dbsize"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() != "0"
        })
        .count();
    assert!(holders >= 2, "all pools landed on one node");
}
