//! The waiting line on Redis with two gateway replicas on one key prefix: one line for both,
//! decided in the script (positions, promotion, the held seat), each event told once by the
//! replica whose call did it, and the wait estimate read from each replica's own view.

use crate::common::*;
use crate::queue::{join, poll, pool, tk};
use seatgate::config::{RedisConfig, RedisTarget};
use seatgate::domain::{
    FullReason, Joined, Millis, Polled, PoolKey, PoolSpec, QueueEvent, QueueResult, QueueSpec,
    ReleaseReason, Reservation, SeatRecord, Ticket, TicketKey, TicketState,
};
use seatgate::ledger::redis::RedisLedger;
use seatgate::ledger::{LedgerObserver, SeatLedger};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

const HOLD: Millis = 60_000;

/// The queue events one replica told its observer.
#[derive(Default)]
struct Told(Mutex<Vec<(Ticket, QueueEvent, Millis)>>);

impl LedgerObserver for Told {
    fn released(&self, _: &SeatRecord, _: ReleaseReason) {}

    fn queue_event(&self, t: &Ticket, ev: QueueEvent, at: Millis) {
        self.0.lock().unwrap().push((t.clone(), ev, at));
    }
}

impl Told {
    fn of(&self, key: TicketKey) -> Vec<QueueEvent> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|(t, ..)| t.key == key)
            .map(|e| e.1)
            .collect()
    }

    fn count(&self, ev: QueueEvent) -> usize {
        self.0.lock().unwrap().iter().filter(|e| e.1 == ev).count()
    }
}

/// Two replicas on one prefix (keys deleted when dropped), each with its own observer.
struct Two {
    a: Arc<RedisLedger>,
    b: Arc<RedisLedger>,
    told_a: Arc<Told>,
    told_b: Arc<Told>,
    _prefix: Prefix,
}

fn replica(prefix: &Prefix, specs: &[PoolSpec], told: Arc<Told>) -> Arc<RedisLedger> {
    let cfg = RedisConfig {
        target: RedisTarget::Single(redis_url()),
        prefix: prefix.0.clone(),
    };
    let l = RedisLedger::new(&cfg, told).unwrap();
    l.use_caller_clock(true);
    l.configure(specs);
    Arc::new(l)
}

impl Two {
    fn new(specs: &[PoolSpec]) -> Two {
        let prefix = Prefix(format!("tq{:x}", rand::random::<u64>()));
        let (told_a, told_b) = (Arc::new(Told::default()), Arc::new(Told::default()));
        Two {
            a: replica(&prefix, specs, told_a.clone()),
            b: replica(&prefix, specs, told_b.clone()),
            told_a,
            told_b,
            _prefix: prefix,
        }
    }
}

fn qspec(seats: u32, barging: bool, max_length: u32) -> PoolSpec {
    let mut sp = spec("default", seats);
    sp.queue = Some(QueueSpec {
        hold: HOLD,
        abandon_after: 30_000,
        max_wait: 1_800_000,
        max_length,
        barging,
    });
    sp
}

/// Whether a reservation for `user` (under `lease_id`) is refused for want of a seat; a
/// granted one is given back.
async fn refused(l: &dyn SeatLedger, user: &str, lease_id: u64, now: Millis) -> bool {
    let c = seatgate::domain::Claim {
        lease_id,
        ..claim("default", user)
    };
    match l.reserve(&c, now).await.unwrap() {
        Reservation::Full(f) => {
            assert_eq!(f.reason, FullReason::Pool);
            true
        }
        Reservation::Granted(lease) => {
            l.cancel(&lease).await;
            false
        }
    }
}

async fn in_use(l: &dyn SeatLedger, now: Millis) -> (u32, u32) {
    let u = usage(l, "default", now).await;
    assert!(u.in_use <= u.capacity, "{u:?}");
    (u.in_use, u.queue_length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_two_replicas_share_one_line() {
    let two = Two::new(&[qspec(1, false, 1000)]);
    let (a, b): (&dyn SeatLedger, &dyn SeatLedger) = (two.a.as_ref(), two.b.as_ref());
    login(a, "default", "ann", "A", s(0)).await;
    let (t1, t2) = (tk("one"), tk("two"));
    assert_eq!(join(a, "bob", t1, s(1)).await.position, 1);
    assert_eq!(join(b, "cat", t2, s(1)).await.position, 2);
    // Polled on the other replica, each keeps its place; joining again changes nothing.
    let p1 = poll(b, t1, s(2)).await;
    assert_eq!(
        (p1.position, p1.state, p1.length),
        (1, TicketState::Waiting, 2)
    );
    assert_eq!(poll(a, t2, s(2)).await.position, 2);
    assert_eq!(join(b, "bob", t1, s(3)).await.position, 1);
    for l in [a, b] {
        let line = l.queue(s(3)).await.unwrap();
        let order: Vec<_> = line.iter().map(|t| (t.key, t.position)).collect();
        assert_eq!(order, vec![(t1, 1), (t2, 2)]);
        assert_eq!(line[0].user.as_deref(), Some("bob"));
        assert_eq!(in_use(l, s(3)).await, (1, 2));
    }

    // A release on A: the head polled on B is ready, its seat held for it until now + hold.
    a.release(&key("A"), ReleaseReason::Logout, s(4))
        .await
        .unwrap()
        .expect("ann held a seat");
    let p1 = poll(b, t1, s(5)).await;
    assert_eq!(p1.state, TicketState::Ready);
    assert_eq!(p1.ready_until, Some(s(5) + HOLD));
    assert_eq!(p1.estimated_wait, Some(0));
    assert_eq!(poll(a, t2, s(5)).await.state, TicketState::Waiting);
    // The held seat counts on both replicas: the pool is full, the line still two long.
    assert_eq!(in_use(a, s(5)).await, (1, 2));
    // The replica whose call promoted told it, once; the other told nothing of it.
    assert_eq!(two.told_b.of(t1), vec![QueueEvent::Ready]);
    assert_eq!(two.told_a.of(t1), vec![QueueEvent::Joined]);
    assert_eq!(two.told_b.of(t2), vec![QueueEvent::Joined]);

    // The ticket's login on A finds the seat held by B's promotion; it leaves Admitted.
    let mut c = claim("default", "bob");
    c.lease_id = t1.lease_id();
    let Reservation::Granted(lease) = a.reserve(&c, s(6)).await.unwrap() else {
        panic!("the ready ticket's login found no seat");
    };
    a.commit(&lease, &c, key("B"), s(6)).await.unwrap();
    let left = a.queue_admitted(&pool(), &t1, s(6)).await.unwrap().unwrap();
    assert_eq!((left.key, left.state), (t1, TicketState::Ready));
    assert_eq!(
        two.told_a.of(t1),
        vec![QueueEvent::Joined, QueueEvent::Left(QueueResult::Admitted)]
    );
    assert_eq!(poll(b, t2, s(7)).await.position, 1);
    assert_eq!(in_use(b, s(7)).await, (1, 1));
    assert!(b
        .queue_admitted(&pool(), &t1, s(7))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_a_ready_seat_is_not_taken_on_the_other_replica() {
    for barging in [false, true] {
        let two = Two::new(&[qspec(1, barging, 1000)]);
        let (a, b): (&dyn SeatLedger, &dyn SeatLedger) = (two.a.as_ref(), two.b.as_ref());
        login(a, "default", "ann", "A", s(0)).await;
        let (t1, t2) = (tk("one"), tk("two"));
        join(a, "bob", t1, s(1)).await;
        join(a, "cat", t2, s(1)).await;
        a.release(&key("A"), ReleaseReason::Logout, s(2))
            .await
            .unwrap();
        // Barging on, the seat is free until the head polls; off, B's sweep holds it for the
        // head even though nobody polled.
        if barging {
            assert_eq!(poll(a, t1, s(3)).await.state, TicketState::Ready);
        } else {
            b.sweep(s(3)).await.unwrap();
            assert_eq!(two.told_b.of(t1), vec![QueueEvent::Ready]);
        }
        // Neither a newcomer nor the second ticket's login takes it, on B; a failed login of
        // the ready ticket (its lease cancelled) keeps it held.
        let (mut c, dan) = (claim("default", "bob"), rand::random::<u64>() >> 1);
        c.lease_id = t1.lease_id();
        let Reservation::Granted(lease) = b.reserve(&c, s(4)).await.unwrap() else {
            panic!("barging {barging}: the ready ticket's login found no seat");
        };
        b.cancel(&lease).await;
        assert!(refused(b, "dan", dan, s(4)).await, "barging {barging}");
        assert!(refused(b, "cat", t2.lease_id(), s(4)).await);
        assert!(refused(a, "dan", dan, s(5)).await);
        assert_eq!(in_use(b, s(5)).await, (1, 2));
        // Its next login, on B, takes the held seat: still one seat in use.
        let Reservation::Granted(lease) = b.reserve(&c, s(6)).await.unwrap() else {
            panic!("barging {barging}: the hold did not survive a failed login");
        };
        b.commit(&lease, &c, key("B"), s(6)).await.unwrap();
        b.queue_admitted(&pool(), &t1, s(6)).await.unwrap().unwrap();
        assert_eq!(in_use(a, s(6)).await, (1, 1));
        assert!(refused(a, "dan", dan, s(7)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_concurrent_joins_keep_distinct_positions() {
    const N: usize = 24;
    const MAX: u32 = 20;
    let two = Two::new(&[qspec(1, false, MAX)]);
    login(two.a.as_ref(), "default", "ann", "A", s(0)).await;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let l = if i % 2 == 0 {
                two.a.clone()
            } else {
                two.b.clone()
            };
            tokio::spawn(async move {
                let t = tk(&format!("t{i}"));
                let j = l
                    .enqueue(&claim("default", &format!("u{i}")), t, s(1))
                    .await
                    .unwrap();
                (i, t, j)
            })
        })
        .collect();
    let mut joined = Vec::new();
    let mut full = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, t, Joined::Queued(st)) => joined.push((i, t, st.position)),
            (_, _, Joined::LineFull) => full += 1,
        }
    }
    // Exactly max_length joined, whichever replica raced; the rest were refused.
    assert_eq!((joined.len(), full), (MAX as usize, N - MAX as usize));
    let positions: HashSet<u32> = joined.iter().map(|j| j.2).collect();
    assert_eq!(positions, (1..=MAX).collect::<HashSet<_>>());
    // Each replica lists the one line: the order the positions said.
    joined.sort_by_key(|j| j.2);
    let want: Vec<_> = joined.iter().map(|j| (j.1, j.2)).collect();
    for l in [&two.a, &two.b] {
        let line = l.queue(s(2)).await.unwrap();
        assert_eq!(
            line.iter().map(|t| (t.key, t.position)).collect::<Vec<_>>(),
            want
        );
    }
    // Each join was told once, by the replica that made it; each refusal likewise.
    for (i, t, _) in &joined {
        let (mine, other) = if i % 2 == 0 {
            (&two.told_a, &two.told_b)
        } else {
            (&two.told_b, &two.told_a)
        };
        assert_eq!(mine.of(*t), vec![QueueEvent::Joined]);
        assert!(other.of(*t).is_empty());
    }
    let refusals = two.told_a.count(QueueEvent::Left(QueueResult::LineFull))
        + two.told_b.count(QueueEvent::Left(QueueResult::LineFull));
    assert_eq!(refusals, N - MAX as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_wait_estimate_from_each_replicas_view() {
    let two = Two::new(&[qspec(2, false, 1000)]);
    let (a, b): (&dyn SeatLedger, &dyn SeatLedger) = (two.a.as_ref(), two.b.as_ref());
    // Two seats, active (touched), idle at 600 s after their last activity.
    login(a, "default", "ann", "A", s(0)).await;
    let _ = a.touch(&key("A"), s(0)).await.unwrap();
    login(a, "default", "bob", "B", s(10)).await;
    let _ = a.touch(&key("B"), s(10)).await.unwrap();
    usage(b, "default", s(20)).await;
    assert_eq!(b.wait_estimate(&pool(), 1, s(20)), Some(580_000));
    assert_eq!(b.wait_estimate(&pool(), 2, s(20)), Some(590_000));
    // No third seat to end and no release yet: unknown.
    assert_eq!(b.wait_estimate(&pool(), 3, s(20)), None);
    // A poll's estimate: the first waiting ticket needs the earliest seat's end.
    let t1 = tk("one");
    let j = join(b, "cat", t1, s(20)).await;
    assert_eq!(
        (j.state, j.estimated_wait),
        (TicketState::Waiting, Some(580_000))
    );

    // A release on A counts in the rate B's view reads: one in the (young) window of a minute.
    a.release(&key("A"), ReleaseReason::Logout, s(30))
        .await
        .unwrap();
    usage(b, "default", s(40)).await;
    // One seat deadline (bob's, 610 s) and a release a minute: three seats in three minutes.
    assert_eq!(b.wait_estimate(&pool(), 1, s(40)), Some(60_000));
    assert_eq!(b.wait_estimate(&pool(), 3, s(40)), Some(180_000));
    // A stale view (the store stopped answering) is no answer.
    two.b.age_views(std::time::Duration::from_secs(60));
    assert_eq!(b.wait_estimate(&pool(), 1, s(40)), None);
}

/// A `redis-server` this test started, killed (by its own pid) when dropped.
struct Node {
    port: u16,
    child: std::process::Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `ok` holds, a bounded number of times 50 ms apart.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

/// A three-node Redis Cluster started for this test (its files in `dir`).
async fn cluster(dir: &std::path::Path) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        // The bus is port + 10000 unless set, which may be no port at all.
        let (port, bus) = (free_port(), free_port());
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap(), "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-port", &bus.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let node = Node { port, child };
        let p = port.to_string();
        until("a cluster node did not start", || {
            redis_cli(&["-p", &p, "ping"]).contains("PONG")
        })
        .await;
        nodes.push(node);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    redis_cli(&args);
    let ports: Vec<String> = nodes.iter().map(|n| n.port.to_string()).collect();
    until("the cluster did not become ready", || {
        ports
            .iter()
            .all(|p| redis_cli(&["-p", p, "cluster", "info"]).contains("cluster_state:ok"))
    })
    .await;
    nodes
}

/// On a Redis Cluster every line call is one script in the pool's slot (a key of another slot
/// would be refused with CROSSSLOT): two replicas share the lines of pools on different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_cluster_keeps_each_line_in_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let cfg = RedisConfig {
        target: RedisTarget::Cluster(
            nodes
                .iter()
                .map(|n| format!("redis://127.0.0.1:{}", n.port))
                .collect(),
        ),
        prefix: "clq".into(),
    };
    let names: Vec<String> = (0..4).map(|i| format!("line{i}")).collect();
    let specs: Vec<PoolSpec> = names
        .iter()
        .map(|n| {
            let mut sp = qspec(1, false, 1000);
            sp.key = PoolKey::new("crm", n);
            sp
        })
        .collect();
    let (told_a, told_b) = (Arc::new(Told::default()), Arc::new(Told::default()));
    let (a, b) = (
        RedisLedger::new(&cfg, told_a.clone()).unwrap(),
        RedisLedger::new(&cfg, told_b.clone()).unwrap(),
    );
    for l in [&a, &b] {
        l.use_caller_clock(true);
        l.configure(&specs);
    }
    for (i, n) in names.iter().enumerate() {
        let pk = PoolKey::new("crm", n);
        let (t1, t2) = (TicketKey::new(&pk, "one"), TicketKey::new(&pk, "two"));
        login(&a, n, "ann", &format!("A{i}"), s(0)).await;
        let c = claim(n, "bob");
        let Joined::Queued(q1) = a.enqueue(&c, t1, s(1)).await.unwrap() else {
            panic!("{n}: line full")
        };
        let Joined::Queued(q2) = b.enqueue(&claim(n, "cat"), t2, s(1)).await.unwrap() else {
            panic!("{n}: line full")
        };
        assert_eq!((q1.position, q2.position), (1, 2), "{n}");
        a.release(&key(&format!("A{i}")), ReleaseReason::Logout, s(2))
            .await
            .unwrap();
        b.sweep(s(3)).await.unwrap();
        let Polled::Status(p) = a.poll(&pk, &t1, s(4)).await.unwrap() else {
            panic!("{n}: the head is not in line")
        };
        assert_eq!(p.state, TicketState::Ready, "{n}");
        let tc = seatgate::domain::Claim {
            lease_id: t1.lease_id(),
            ..c
        };
        let Reservation::Granted(lease) = b.reserve(&tc, s(5)).await.unwrap() else {
            panic!("{n}: the held seat was not found")
        };
        b.commit(&lease, &tc, key(&format!("B{i}")), s(5))
            .await
            .unwrap();
        assert!(b.queue_admitted(&pk, &t1, s(5)).await.unwrap().is_some());
    }
    // Each line is one long (the second ticket), listed alike from both replicas.
    for l in [&a, &b] {
        let line = l.queue(s(6)).await.unwrap();
        assert_eq!(line.len(), names.len());
        assert!(line
            .iter()
            .all(|t| t.position == 1 && t.state == TicketState::Waiting));
        for u in l.usage(s(6)).await.unwrap() {
            assert_eq!((u.in_use, u.capacity, u.queue_length), (1, 1, 1), "{u:?}");
        }
    }
    assert_eq!(told_b.count(QueueEvent::Ready), names.len());
    // The pools did land on more than one node (else this proves nothing about slots).
    let holders = nodes
        .iter()
        .filter(|n| redis_cli(&["-p", &n.port.to_string(), "dbsize"]).trim() != "0")
        .count();
    assert!(holders >= 2, "every line landed on one node");
}

/// The rate counts the releases of the last hour only, in minute buckets that the pool's slot
/// keeps no longer than that (a pool releasing for days keeps an hour of buckets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_the_rate_forgets_releases_older_than_an_hour() {
    let two = Two::new(&[qspec(3, false, 1000)]);
    let (a, b): (&dyn SeatLedger, &dyn SeatLedger) = (two.a.as_ref(), two.b.as_ref());
    let minute = 60_000;
    // Releases over three hours, one a minute, on replica A.
    for i in 0..180u64 {
        let at = s(0) + i * minute;
        login(a, "default", "ann", &format!("c{i}"), at).await;
        a.release(&key(&format!("c{i}")), ReleaseReason::Logout, at)
            .await
            .unwrap();
    }
    let last = s(0) + 179 * minute;
    // B's view: 60 in the last hour, so three seats in three minutes (no seat holds a deadline).
    usage(b, "default", last).await;
    assert_eq!(b.wait_estimate(&pool(), 3, last), Some(3 * minute));
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let buckets: usize = redis::cmd("HLEN")
        .arg(format!("{{{}:crm:default}}:qrate", two._prefix.0))
        .query(&mut con)
        .unwrap();
    assert!(buckets <= 61, "{buckets} buckets kept");
    // Half an hour later half of them are out of the window.
    usage(b, "default", last + 30 * minute).await;
    assert_eq!(
        b.wait_estimate(&pool(), 3, last + 30 * minute),
        Some(6 * minute)
    );
    // Over an hour after the last: nothing says when a seat frees.
    usage(b, "default", last + 61 * minute).await;
    assert_eq!(b.wait_estimate(&pool(), 3, last + 61 * minute), None);
}

/// `available()` on `l` from a view refreshed at `now` (the view's own script op: the listing
/// read first only sets the test clock, and reads the line without changing it).
async fn available_at(l: &RedisLedger, now: Millis) -> Option<u32> {
    l.queue(now).await.unwrap();
    l.refresh_view().await;
    l.available(&pool(), now)
}

/// Checks answer from `available()`: barging off, while any ticket waits a newcomer's login is
/// refused, so the view says no seat is free even when one is (before the head is promoted);
/// once the line is empty it is capacity less what is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_redis_available_is_zero_while_tickets_wait() {
    let two = Two::new(&[qspec(2, false, 1000)]);
    let (a, b): (&dyn SeatLedger, &dyn SeatLedger) = (two.a.as_ref(), two.b.as_ref());
    login(a, "default", "ann", "A", s(0)).await;
    assert_eq!(available_at(&two.b, s(0)).await, Some(1));
    login(a, "default", "bob", "B", s(0)).await;
    let (t1, t2) = (tk("one"), tk("two"));
    join(a, "cat", t1, s(1)).await;
    join(a, "dan", t2, s(1)).await;
    assert_eq!(available_at(&two.b, s(1)).await, Some(0));
    // A seat frees on A: nobody has promoted the head yet, and still a newcomer is refused.
    a.release(&key("A"), ReleaseReason::Logout, s(2))
        .await
        .unwrap()
        .expect("ann held a seat");
    assert_eq!(available_at(&two.b, s(2)).await, Some(0));
    assert!(refused(b, "eve", rand::random::<u64>() >> 1, s(2)).await);
    // The usage listing refreshes the view too, with the same answer.
    assert_eq!(in_use(b, s(2)).await, (2, 2));
    assert_eq!(b.available(&pool(), s(2)), Some(0));
    // Both tickets leave (the ready one admitted without a login, the other removed): the line
    // is empty, one seat free (bob holds the other).
    let first = a.queue_admitted(&pool(), &t1, s(3)).await.unwrap().unwrap();
    assert_eq!(first.state, TicketState::Ready);
    let rest = a.queue(s(3)).await.unwrap();
    assert_eq!(rest.len(), 1);
    a.remove_ticket(rest[0].id, s(3)).await.unwrap().unwrap();
    assert_eq!(available_at(&two.b, s(3)).await, Some(1));
    assert_eq!(in_use(b, s(3)).await, (1, 0));
    assert_eq!(b.available(&pool(), s(3)), Some(1));
    // A ticket whose time is up holds nobody back, even before a sweep drops it: not polled
    // for abandon_after (30 s), it left.
    login(a, "default", "fay", "F", s(4)).await;
    join(a, "gus", tk("three"), s(5)).await;
    a.release(&key("F"), ReleaseReason::Logout, s(6))
        .await
        .unwrap();
    assert_eq!(available_at(&two.b, s(6)).await, Some(0));
    assert_eq!(available_at(&two.b, s(35)).await, Some(1));
    // Barging on, a waiting ticket holds nobody back: a free seat is free.
    let two = Two::new(&[qspec(1, true, 1000)]);
    login(two.a.as_ref(), "default", "ann", "A", s(0)).await;
    join(two.a.as_ref(), "bob", tk("one"), s(1)).await;
    two.a
        .release(&key("A"), ReleaseReason::Logout, s(2))
        .await
        .unwrap();
    assert_eq!(available_at(&two.b, s(2)).await, Some(1));
}
