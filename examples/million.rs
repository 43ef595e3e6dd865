//! A million sessions on the embedded store (issue 17): memory per live session, a restart's
//! time to serve again, and live traffic's p99 while a mass lapse is swept.
//!
//! `cargo run --release --example million [sessions] [live] [restart]` (defaults 100000 and
//! 1000; a third argument `restart` stops after the restart, for measuring it alone).
//!
//! The store is the gateway's: the memory ledger with its redb journal in a tempdir, and
//! jemalloc. Time is passed to the ledger, not read from the clock, so "all of them lapse in
//! the same second" is exact: every session is admitted at `t0` and idles out at once, while
//! `live` sessions touched later keep holding. Wall-clock figures are ratios within one run
//! (the machine is shared); the RSS figure is absolute. Last, the same logins into a store
//! without a journal on one thread: the ledger's own cost per login.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use seatgate::domain::{
    Claim, Grant, Millis, PoolKey, PoolSpec, Reservation, SeatsPer, SessionKey,
};
use seatgate::ledger::memory::MemoryLedger;
use seatgate::ledger::{NoObserver, SeatLedger};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IDLE: Millis = 600_000;
/// Logins admitted at once: the journal's group commit makes them share fsyncs, as racing
/// logins through the gateway do.
const IN_FLIGHT: u64 = 256;

fn spec(seats: u32) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("m", "default"),
        grants: vec![Grant {
            seats,
            not_before: None,
            expires: None,
        }],
        idle_timeout: IDLE,
        max_lifetime: 10 * IDLE,
        presence_timeout: None,
        standby_timeout: 60_000,
        seats_per: SeatsPer::Session,
        max_sessions: None,
        groups: vec![],
        overflow_ms: None,
        queue: None,
    }
}

fn claim(i: u64) -> Claim {
    Claim {
        pool: PoolKey::new("m", "default"),
        user: Some(format!("user{i}@example.com")),
        device: None,
        client: "web".into(),
        lease_id: i,
    }
}

fn key(i: u64) -> SessionKey {
    SessionKey::new("m", &format!("cookie-{i}"))
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Admits sessions `from..to` at `now`, `IN_FLIGHT` at a time.
async fn admit(l: &Arc<MemoryLedger>, from: u64, to: u64, now: Millis) {
    let mut i = from;
    while i < to {
        let end = (i + IN_FLIGHT).min(to);
        let tasks: Vec<_> = (i..end)
            .map(|j| {
                let l = l.clone();
                tokio::spawn(async move {
                    let c = claim(j);
                    let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
                        panic!("pool full at {j}")
                    };
                    l.commit(&lease, &c, key(j), now).await.unwrap();
                    // The first request: standby -> active (journaled).
                    let _ = l.touch(&key(j), now).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        i = end;
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Touches the live sessions from a thread of its own (a proxy thread) and admits and
/// releases one login in ten, until `stop`; the latency of each call.
fn traffic(
    l: Arc<MemoryLedger>,
    from: u64,
    to: u64,
    now: Millis,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Duration>, Vec<Duration>)> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut touches, mut admits) = (Vec::new(), Vec::new());
        let mut n = 0u64;
        rt.block_on(async {
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let i = from + n % (to - from);
                let t = Instant::now();
                let got = l.touch(&key(i), now).await.unwrap();
                touches.push(t.elapsed());
                assert!(
                    matches!(got, seatgate::domain::Touch::Held { .. }),
                    "{got:?}"
                );
                if n.is_multiple_of(10) {
                    let j = 10_000_000_000 + n;
                    let c = claim(j);
                    let t = Instant::now();
                    if let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() {
                        l.commit(&lease, &c, key(j), now).await.unwrap();
                    }
                    admits.push(t.elapsed());
                    l.release(&key(j), seatgate::domain::ReleaseReason::Logout, now)
                        .await
                        .unwrap();
                }
                tokio::task::yield_now().await;
            }
        });
        (touches, admits)
    })
}

/// Live traffic while the periodic sweep runs back to back (the gateway's runs every few
/// seconds) and finds nothing due, with `n` sessions' worth of `what` in the store: what
/// the sweep's own passes over the store cost the traffic, and one pass's time.
fn idle_sweeps(
    rt: &tokio::runtime::Runtime,
    ledger: &Arc<MemoryLedger>,
    n: u64,
    live: u64,
    now: Millis,
    window: Duration,
    what: &str,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let h = traffic(ledger.clone(), n, n + live, now, stop.clone());
    let t = Instant::now();
    let mut sweeps = 0u32;
    while t.elapsed() < window {
        let swept = rt.block_on(ledger.sweep(now)).unwrap();
        assert_eq!(swept, 0, "nothing is due at {now}");
        sweeps += 1;
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Release);
    let (mut tq, mut aq) = h.join().unwrap();
    println!(
        "{sweeps} sweeps with nothing due ({n} {what}) back to back: {:.2?} each",
        took / sweeps
    );
    report("live traffic during them", &mut tq, &mut aq);
}

fn report(what: &str, touches: &mut [Duration], admits: &mut [Duration]) {
    println!(
        "{what}: touch n={} p50={:?} p99={:?} max={:?}; admit+commit n={} p50={:?} p99={:?} max={:?}",
        touches.len(),
        pct(touches, 0.5),
        pct(touches, 0.99),
        pct(touches, 1.0),
        admits.len(),
        pct(admits, 0.5),
        pct(admits, 0.99),
        pct(admits, 1.0),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(100_000, |a| a.parse().unwrap());
    let live: u64 = args.next().map_or(1_000, |a| a.parse().unwrap());
    let restart_only = args.next().as_deref() == Some("restart");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seats.redb");
    let pools = [spec((n + live + 1_000) as u32)];
    let t0: Millis = 1_000_000_000;

    let ledger = rt.block_on(async {
        let l = MemoryLedger::open(&path, &pools, Arc::new(NoObserver), t0)
            .await
            .unwrap();
        Arc::new(l)
    });
    let before = rss_kib();
    let t = Instant::now();
    rt.block_on(admit(&ledger, 0, n, t0));
    let took = t.elapsed();
    let after = rss_kib();
    println!(
        "admitted {n} sessions in {took:.2?} ({:.0}/s); RSS {before} -> {after} KiB: {:.0} bytes per session",
        n as f64 / took.as_secs_f64(),
        (after - before) as f64 * 1024.0 / n as f64
    );
    rt.block_on(async {
        admit(&ledger, n, n + live, t0).await;
        ledger.flush().await.unwrap();
    });

    // Restart: drop (closes the journal) and open again until a session answers.
    let t = Instant::now();
    drop(ledger);
    let ledger = rt.block_on(async {
        let l = MemoryLedger::open(&path, &pools, Arc::new(NoObserver), t0 + 1)
            .await
            .unwrap();
        let got = l.touch(&key(0), t0 + 1).await.unwrap();
        assert!(
            matches!(got, seatgate::domain::Touch::Held { .. }),
            "{got:?}"
        );
        Arc::new(l)
    });
    println!(
        "restart with {} sessions in the journal: serving again after {:.2?}; RSS {} KiB",
        n + live,
        t.elapsed(),
        rss_kib()
    );
    if restart_only {
        return;
    }

    // The live sessions are seen later, so they outlast the mass lapse at t0 + IDLE.
    let seen = t0 + IDLE / 2;
    rt.block_on(async {
        for i in n..n + live {
            let _ = ledger.touch(&key(i), seen).await.unwrap();
        }
    });
    let lapse = t0 + IDLE + 1_000;
    let window = Duration::from_secs(2);

    // Baseline: the same traffic a second before the mass lapse (nothing due).
    let stop = Arc::new(AtomicBool::new(false));
    let h = traffic(ledger.clone(), n, n + live, t0 + IDLE - 1_000, stop.clone());
    std::thread::sleep(window);
    stop.store(true, Ordering::Release);
    let (mut tq, mut aq) = h.join().unwrap();
    report("live traffic, nothing to sweep", &mut tq, &mut aq);
    idle_sweeps(
        &rt,
        &ledger,
        n,
        live,
        t0 + IDLE - 1_000,
        window,
        "seats held",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let h = traffic(ledger.clone(), n, n + live, lapse, stop.clone());
    let t = Instant::now();
    let swept = rt.block_on(ledger.sweep(lapse)).unwrap();
    let sweep_took = t.elapsed();
    // As long again after the sweep: what traffic sees once the lapse is swept.
    std::thread::sleep(window.min(sweep_took));
    stop.store(true, Ordering::Release);
    let (mut tq, mut aq) = h.join().unwrap();
    println!("swept {swept} lapsed sessions in {sweep_took:.2?}");
    report("live traffic during the sweep", &mut tq, &mut aq);
    println!("RSS after the sweep: {} KiB", rss_kib());
    idle_sweeps(&rt, &ledger, n, live, lapse, window, "tombstones kept");
    drop(ledger);

    // The same logins without the journal, on one thread: what the ledger's memory side costs
    // per login, beside the journaled figure above (its group commits and fsyncs).
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let volatile = Arc::new(MemoryLedger::volatile(Arc::new(NoObserver)));
    volatile.configure(&pools);
    let t = Instant::now();
    one.block_on(admit(&volatile, 0, n, t0));
    let took = t.elapsed();
    println!(
        "without the journal, on one thread: admitted {n} sessions in {took:.2?} ({:.0}/s)",
        n as f64 / took.as_secs_f64()
    );
}
