//! Redis store throughput: admissions per second (reserve + commit + release, each one atomic
//! script call) with many logins in flight, and what `touch` costs a proxied request (cache
//! hit: no round trip; cache miss: one script call).
//!
//! Needs Redis (`SEATGATE_BENCH_REDIS`, default redis://127.0.0.1:6379); uses its own key
//! prefix and deletes it afterwards. Run: `cargo bench --bench redis` (see
//! docs/benchmarks-redis.md for the figures and the exact command used).

mod common;

use common::{claim, spec};
use seatgate::config::{RedisConfig, RedisTarget};
use seatgate::domain::{ReleaseReason, Reservation, SessionKey};
use seatgate::ledger::redis::RedisLedger;
use seatgate::ledger::{NoObserver, SeatLedger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let url =
        std::env::var("SEATGATE_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench{:x}", rand::random::<u32>());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = RedisConfig {
        target: RedisTarget::Single(url.clone()),
        prefix: prefix.clone(),
    };
    let l = Arc::new(RedisLedger::new(&cfg, Arc::new(NoObserver)).unwrap());
    let held = 500u32;
    l.configure(&[spec(held + 1000)]);
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);

    rt.block_on(async {
        // 500 seats already held: admission counts and purges with a realistic pool.
        for i in 0..held as u64 {
            let c = claim(i);
            let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else { panic!("full") };
            l.commit(&lease, &c, SessionKey::new("bench", &i.to_string()), 0).await.unwrap();
        }

        for concurrency in [1u64, 16, 64] {
            let done = Arc::new(AtomicU64::new(0));
            let stop = Instant::now() + Duration::from_secs(secs);
            let mut tasks = Vec::new();
            for w in 0..concurrency {
                let (l, done) = (l.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = 1_000_000 + w * 10_000_000;
                    while Instant::now() < stop {
                        i += 1;
                        let c = claim(i);
                        let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else { panic!("full") };
                        let key = SessionKey::new("bench", &i.to_string());
                        l.commit(&lease, &c, key, 0).await.unwrap();
                        l.release(&key, ReleaseReason::Logout, 0).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let t0 = Instant::now();
            for t in tasks {
                t.await.unwrap();
            }
            let n = done.load(Ordering::Relaxed);
            let el = t0.elapsed().as_secs_f64();
            println!(
                "admit+commit+release, {held} seats held, {concurrency:>2} in flight: {:>8.0} logins/s ({:.0} script calls/s)",
                n as f64 / el,
                3.0 * n as f64 / el
            );
        }

        // Admissions alone (reserve = the atomic admission step), 64 in flight.
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let (l, done) = (l.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 5_000_000_000 + w * 10_000_000;
                while Instant::now() < stop {
                    i += 1;
                    let c = claim(i);
                    if let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() {
                        l.cancel(&lease).await;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let t0 = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        let el = t0.elapsed().as_secs_f64();
        println!("reserve+cancel, 64 in flight: {:>8.0} admissions/s", done.load(Ordering::Relaxed) as f64 / el);

        // Touch: the first is verified in Redis, the next within CACHE_TTL come from the cache.
        let key = SessionKey::new("bench", "0");
        let n = 2_000u32;
        let t0 = Instant::now();
        for _ in 0..n {
            let _ = l.touch(&key, 0).await.unwrap();
        }
        let hit = t0.elapsed() / n;
        let t0 = Instant::now();
        let m = 500u32;
        for i in 0..m {
            // A different session each time: always a cache miss (one script call).
            let _ = l.touch(&SessionKey::new("bench", &(1 + i % (held - 1)).to_string()), 0).await.unwrap();
            if i % 100 == 99 {
                tokio::time::sleep(seatgate::ledger::redis::CACHE_TTL).await;
            }
        }
        let miss = (t0.elapsed() - seatgate::ledger::redis::CACHE_TTL * (m / 100)) / m;
        println!("touch, cache hit (per request): {hit:?}; cache miss (verify, once per session per CACHE_TTL): {miss:?}");
        let t0 = Instant::now();
        l.flush().await.unwrap();
        println!("flush of batched activity: {:?}", t0.elapsed());
    });

    if let Ok(c) = redis::Client::open(url.as_str()) {
        if let Ok(mut con) = c.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{prefix}:*"))
                .query(&mut con)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
            }
        }
    }
}
