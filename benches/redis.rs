//! Redis store throughput: admissions per second (reserve + commit + release, each one atomic
//! script call) with many logins in flight, and what `touch` costs a proxied request (cache
//! hit: no round trip; cache miss: one script call).
//!
//! Then the admission cost against pool size: one reserve + commit + release (1 in flight) with
//! 10, 10k and 100k seats already held, for a `seats_per: user` pool and a pool with a group
//! (`BENCH_FLAT=0` skips it; `BENCH_FLAT_ONLY=1` runs only it). The held seats are written
//! straight into the pool's keys by one bulk script (admitting 100k through the ledger would take
//! longer than the bench), in the records' stored form.
//!
//! Needs Redis (`SEATGATE_BENCH_REDIS`, default redis://127.0.0.1:6379); uses its own key
//! prefix and deletes it afterwards. Run: `cargo bench --bench redis` (see
//! docs/benchmarks.md, "Redis" and "Redis admission cost", for the figures and the command used).

mod common;

use common::{claim, spec};
use seatgate::config::{RedisConfig, RedisTarget};
use seatgate::domain::{GroupLimit, PoolKey, ReleaseReason, Reservation, SeatsPer, SessionKey};
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

    let flat = std::env::var("BENCH_FLAT").map_or(true, |v| v != "0");
    let only_flat = std::env::var("BENCH_FLAT_ONLY").is_ok_and(|v| v == "1");
    if !only_flat {
        rt.block_on(throughput(&l, held, secs));
    }
    if flat {
        rt.block_on(flat_cost(&cfg, &url));
    }
    drop_prefix(&url, &prefix);
}

/// Deletes every key under the bench's prefix.
fn drop_prefix(url: &str, prefix: &str) {
    if let Ok(c) = redis::Client::open(url) {
        if let Ok(mut con) = c.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{prefix}:*"))
                .query(&mut con)
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut con);
            }
        }
    }
}

/// Writes `n` held (active) seats of users `h0`… into a pool's keys, as `seats.lua` stores them.
const FILL: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = from, to - 1 do
  local id = string.format('%016x', i * 2 + 1)
  local sess = string.format('%032x', i)
  local r = { id = id, user = 'h' .. i, device = '', client = 'web', session = sess,
    started_at = now, last_activity = now, last_heartbeat = 0, last_request = now, last_input = 0,
    state = 'active', ending_at = 0, overflow = false, ended_by = '' }
  redis.call('HSET', KEYS[2], id, cjson.encode(r))
  redis.call('ZADD', KEYS[1], now + 3600000, id)
  redis.call('HSET', KEYS[3], sess, id)
end
return to - from
"#;

async fn flat_cost(cfg: &RedisConfig, url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let fill = redis::Script::new(FILL);
    for (kind, per, group) in [
        ("seats_per: user", SeatsPer::User, false),
        ("a group", SeatsPer::Session, true),
    ] {
        let mut base = Vec::new();
        for held in [10u64, 10_000, 100_000] {
            let prefix = format!("benchflat{:x}", rand::random::<u32>());
            let cfg = RedisConfig {
                target: cfg.target.clone(),
                prefix: prefix.clone(),
            };
            let l = RedisLedger::new(&cfg, Arc::new(NoObserver)).unwrap();
            let mut s = spec(held as u32 + 1000);
            s.seats_per = per;
            if group {
                s.groups = vec![GroupLimit {
                    name: "staff".into(),
                    users: (0..100).map(|i| format!("h{i}")).collect(),
                    reserve: 5,
                    max: Some(50),
                }];
            }
            l.configure(&[s.clone()]);
            let tag = format!("{{{prefix}:{}:{}}}", s.key.product, s.key.pool);
            let mut from = 0u64;
            while from < held {
                let to = (from + 10_000).min(held);
                let _: u64 = fill
                    .key(format!("{tag}:z"))
                    .key(format!("{tag}:seats"))
                    .key(format!("{tag}:sess"))
                    .arg(from)
                    .arg(to)
                    .invoke_async(&mut con)
                    .await
                    .unwrap();
                from = to;
            }
            let cycle = |i: u64| {
                let l = &l;
                async move {
                    let mut c = claim(i);
                    c.pool = PoolKey::new("bench", "default");
                    let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else {
                        panic!("full")
                    };
                    let key = SessionKey::new("flat", &i.to_string());
                    l.commit(&lease, &c, key, 0).await.unwrap();
                    l.release(&key, ReleaseReason::Logout, 0).await.unwrap();
                }
            };
            // The first calls build the script's indexes from the pool (once: the seats were
            // written around the script), a slice each, logins meanwhile counted by walking
            // the pool: the longest call (a reservation: slice and walk) is what a rebuild
            // costs one call (past the timeout it fails; the script still runs to its end and
            // the next call queues behind it).
            let (t0, mut first, mut calls) = (Instant::now(), Duration::ZERO, 0u32);
            loop {
                let mut c = claim(1_000_000 + calls as u64);
                c.pool = PoolKey::new("bench", "default");
                let t = Instant::now();
                let r = l.reserve(&c, 0).await;
                first = first.max(t.elapsed());
                let ok = r.is_ok();
                if let Ok(Reservation::Granted(lease)) = r {
                    l.cancel(&lease).await;
                }
                calls += 1;
                let built: Option<String> = redis::cmd("HGET")
                    .arg(format!("{tag}:ixmeta"))
                    .arg("version")
                    .query_async(&mut con)
                    .await
                    .unwrap();
                if ok && built.is_some() {
                    break;
                }
            }
            let rebuild = t0.elapsed();
            cycle(0).await;
            let stop = Instant::now() + Duration::from_secs(2);
            let before = script_usec(&mut con).await;
            let (t0, mut n) = (Instant::now(), 0u64);
            while n < 3 || Instant::now() < stop {
                n += 1;
                cycle(n).await;
            }
            let per_cycle = t0.elapsed() / n as u32;
            let after = script_usec(&mut con).await;
            // Time inside Redis, per cycle (3 script calls): what the script costs, apart from
            // the round trips and this machine's scheduling.
            let in_redis = (after.1 - before.1) as f64 / n as f64;
            if base.is_empty() {
                base.push((per_cycle, in_redis));
            }
            println!(
                "flat: {kind}, {held:>6} seats held: admit+commit+release {per_cycle:>10.1?} ({:.2}x the 10-held), in Redis {in_redis:>7.1} µs ({:.2}x); {n} cycles ({} script calls); rebuild {rebuild:.1?} in {calls} calls, the longest {first:.1?}",
                per_cycle.as_secs_f64() / base[0].0.as_secs_f64(),
                in_redis / base[0].1,
                after.0 - before.0
            );
            // A sweep: purge plus one step of the index check (256 items of each index).
            let before = script_usec(&mut con).await;
            for _ in 0..20 {
                l.sweep(0).await.unwrap();
            }
            let after = script_usec(&mut con).await;
            println!(
                "flat: {kind}, {held:>6} seats held: sweep in Redis {:>7.1} µs",
                (after.1 - before.1) as f64 / 20.0
            );
            drop_prefix(url, &prefix);
        }
    }
}

/// Script calls and the µs Redis spent in them so far (`INFO commandstats`, evalsha + eval).
async fn script_usec(con: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    let mut out = (0, 0);
    for line in info.lines() {
        let Some(rest) = line
            .strip_prefix("cmdstat_evalsha:")
            .or(line.strip_prefix("cmdstat_eval:"))
        else {
            continue;
        };
        for kv in rest.split(',') {
            match kv.split_once('=') {
                Some(("calls", v)) => out.0 += v.parse::<u64>().unwrap_or(0),
                Some(("usec", v)) => out.1 += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    out
}

async fn throughput(l: &Arc<RedisLedger>, held: u32, secs: u64) {
    {
        // 500 seats already held: admission counts and purges with a realistic pool.
        for i in 0..held as u64 {
            let c = claim(i);
            let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else {
                panic!("full")
            };
            l.commit(&lease, &c, SessionKey::new("bench", &i.to_string()), 0)
                .await
                .unwrap();
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
                        let Reservation::Granted(lease) = l.reserve(&c, 0).await.unwrap() else {
                            panic!("full")
                        };
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
        println!(
            "reserve+cancel, 64 in flight: {:>8.0} admissions/s",
            done.load(Ordering::Relaxed) as f64 / el
        );

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
            let _ = l
                .touch(
                    &SessionKey::new("bench", &(1 + i % (held - 1)).to_string()),
                    0,
                )
                .await
                .unwrap();
            if i % 100 == 99 {
                tokio::time::sleep(seatgate::ledger::redis::CACHE_TTL).await;
            }
        }
        let miss = (t0.elapsed() - seatgate::ledger::redis::CACHE_TTL * (m / 100)) / m;
        println!("touch, cache hit (per request): {hit:?}; cache miss (verify, once per session per CACHE_TTL): {miss:?}");
        let t0 = Instant::now();
        l.flush().await.unwrap();
        println!("flush of batched activity: {:?}", t0.elapsed());
    }
}
