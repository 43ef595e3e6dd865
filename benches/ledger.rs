//! Ledger hot paths: admit/commit/release (logins) and touch (every request).
//!
//! `touch` is what every proxied request with a session cookie pays; it must not take a global
//! lock, so it is also measured with several threads touching distinct seats at once.

mod common;

use common::{claim, spec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use seatgate::domain::{PoolKey, Reservation, SessionKey};
use seatgate::ledger::memory::MemoryLedger;
use seatgate::ledger::{NoObserver, SeatLedger};
use std::sync::Arc;

fn ledger(seats: u32) -> Arc<MemoryLedger> {
    let l = MemoryLedger::volatile(Arc::new(NoObserver));
    l.configure(&[spec(seats)]);
    Arc::new(l)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = seatgate::domain::now_ms();

    let mut g = c.benchmark_group("ledger");
    // Flat in pool size (issue 17): within 1.5x of each other from 10 to 100k seats held.
    for held in [10u32, 10_000, 100_000] {
        g.bench_with_input(
            BenchmarkId::new("admit_commit_release", held),
            &held,
            |b, &held| {
                let l = ledger(held + 1);
                rt.block_on(async {
                    for i in 0..held as u64 {
                        let c = claim(i);
                        let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
                            panic!()
                        };
                        l.commit(&lease, &c, SessionKey::new("bench", &i.to_string()), now)
                            .await
                            .unwrap();
                    }
                });
                let mut i = 1_000_000u64;
                b.iter(|| {
                    i += 1;
                    rt.block_on(async {
                        let c = claim(i);
                        let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
                            panic!("full")
                        };
                        let key = SessionKey::new("bench", &i.to_string());
                        l.commit(&lease, &c, key, now).await.unwrap();
                        l.release(&key, seatgate::domain::ReleaseReason::Logout, now)
                            .await
                            .unwrap();
                    })
                });
            },
        );
    }

    // With the journal: every state change waits for its (group-committed) write, the first
    // request of a session included (standby -> active is durable).
    let dir = tempfile::tempdir().unwrap();
    let journaled = rt.block_on(async {
        MemoryLedger::open(
            &dir.path().join("bench.redb"),
            &[spec(10)],
            Arc::new(NoObserver),
            now,
        )
        .await
        .unwrap()
    });
    let mut i = 2_000_000u64;
    g.bench_function("journaled_login_first_request_logout", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(async {
                let c = claim(i);
                let Reservation::Granted(lease) = journaled.reserve(&c, now).await.unwrap() else {
                    panic!("full")
                };
                let key = SessionKey::new("bench", &i.to_string());
                journaled.commit(&lease, &c, key, now).await.unwrap();
                let _ = journaled.touch(&key, now).await.unwrap();
                journaled
                    .release(&key, seatgate::domain::ReleaseReason::Logout, now)
                    .await
                    .unwrap();
            })
        });
    });
    drop(journaled);

    let l = ledger(1000);
    let keys: Vec<SessionKey> = rt.block_on(async {
        let mut keys = Vec::new();
        for i in 0..1000u64 {
            let c = claim(i);
            let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
                panic!()
            };
            let k = SessionKey::new("bench", &i.to_string());
            l.commit(&lease, &c, k, now).await.unwrap();
            keys.push(k);
        }
        keys
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("touch", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % keys.len();
            let l = l.clone();
            let k = keys[i];
            futures_lite(l.touch(&k, now))
        })
    });
    g.bench_function("session_key_hash", |b| {
        b.iter(|| SessionKey::new("crm", "0123456789abcdef0123456789abcdef"))
    });
    g.bench_function("available", |b| {
        b.iter(|| l.available(&PoolKey::new("bench", "default"), now))
    });
    g.throughput(Throughput::Elements(4 * 10_000));
    g.bench_function("touch_4_threads_x10k", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..4usize {
                    let l = l.clone();
                    let keys = &keys;
                    s.spawn(move || {
                        for n in 0..10_000usize {
                            let k = keys[(t * 250 + n) % keys.len()];
                            let _ = futures_lite(l.touch(&k, now));
                        }
                    });
                }
            })
        })
    });
    g.finish();
    queue(c, &rt, now);
}

/// The waiting line (issue 12): a poll with 1,000 tickets in line against a check
/// (`available`), and admissions through the line (join at the back, a seat frees, the head's
/// login takes the seat held for it, commit, the ticket leaves) with the line kept at 1,000.
fn queue(c: &mut Criterion, rt: &tokio::runtime::Runtime, start: u64) {
    use seatgate::domain::{Polled, QueueSpec, TicketKey};
    use std::collections::VecDeque;
    const LINE: u32 = 1_000;
    const SEATS: u32 = 100;
    let mut sp = spec(SEATS);
    sp.key = PoolKey::new("bench", "queue");
    // The clock moves 1 ms per iteration: nothing lapses, and each ticket polls once a second.
    sp.idle_timeout = 1 << 50;
    sp.max_lifetime = 1 << 50;
    sp.standby_timeout = 1 << 50;
    sp.queue = Some(QueueSpec {
        hold: 60_000,
        abandon_after: 1 << 50,
        max_wait: 1 << 50,
        max_length: 2 * LINE,
        barging: false,
    });
    let pool = sp.key.clone();
    let l = Arc::new(MemoryLedger::volatile(Arc::new(NoObserver)));
    l.configure(&[sp]);
    let qclaim = |i: u64| seatgate::domain::Claim {
        pool: pool.clone(),
        ..claim(i)
    };
    let tk = |i: u64| TicketKey::new(&pool, &format!("ticket-{i}"));
    let (mut held, mut line) = (VecDeque::new(), VecDeque::new());
    rt.block_on(async {
        for i in 0..SEATS as u64 {
            let c = qclaim(i);
            let Reservation::Granted(lease) = l.reserve(&c, start).await.unwrap() else {
                panic!("full")
            };
            let k = SessionKey::new("bench", &format!("q{i}"));
            l.commit(&lease, &c, k, start).await.unwrap();
            held.push_back(k);
        }
        for i in 0..LINE as u64 {
            let _ = l.enqueue(&qclaim(i), tk(i), start).await.unwrap();
            line.push_back(i);
        }
    });
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(1));
    let mut now = start;
    // Criterion calls each closure several times (warm-up, samples): the ticket turn and the
    // clock go on across calls, so every ticket is polled exactly once a second.
    let mut i = 0usize;
    let keys: Vec<TicketKey> = (0..LINE as u64).map(tk).collect();
    g.bench_function("poll_line_1000", |b| {
        b.iter(|| {
            now += 1;
            i = (i + 1) % keys.len();
            match futures_lite(l.poll(&pool, &keys[i], now)).unwrap() {
                Polled::Status(s) => s.position,
                p => panic!("{p:?}"),
            }
        })
    });
    g.bench_function("available_line_1000", |b| {
        b.iter(|| l.available(&pool, now))
    });
    let mut next = LINE as u64;
    g.bench_function("admit_through_line_1000", |b| {
        b.iter(|| {
            now += 1;
            rt.block_on(async {
                let _ = l.enqueue(&qclaim(next), tk(next), now).await.unwrap();
                line.push_back(next);
                next += 1;
                let k = held.pop_front().unwrap();
                l.release(&k, seatgate::domain::ReleaseReason::Logout, now)
                    .await
                    .unwrap();
                let head = line.pop_front().unwrap();
                let c = seatgate::domain::Claim {
                    lease_id: tk(head).lease_id(),
                    ..qclaim(head)
                };
                let Reservation::Granted(lease) = l.reserve(&c, now).await.unwrap() else {
                    panic!("the head found no seat")
                };
                let k = SessionKey::new("bench", &format!("q{head}"));
                l.commit(&lease, &c, k, now).await.unwrap();
                l.queue_admitted(&pool, &tk(head), now).await.unwrap();
                held.push_back(k);
            })
        })
    });
    // What the estimate's once-a-second read of the deadlines costs (under the pool lock) at
    // 100k seats held: every iteration is a second later, so every call reads them.
    let big = ledger(100_000);
    rt.block_on(async {
        for i in 0..100_000u64 {
            let c = claim(i);
            let Reservation::Granted(lease) = big.reserve(&c, start).await.unwrap() else {
                panic!("full")
            };
            let k = SessionKey::new("bench", &format!("e{i}"));
            big.commit(&lease, &c, k, start).await.unwrap();
        }
    });
    let big_pool = PoolKey::new("bench", "default");
    let mut at = start;
    g.bench_function("wait_estimate_reread_100k", |b| {
        b.iter(|| {
            at += 1_001;
            big.wait_estimate(&big_pool, 1, at)
        })
    });
    g.finish();
}

/// Polls a future that never actually waits (memory ledger touch) without a runtime.
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

criterion_group!(ledger_benches, benches);
criterion_main!(ledger_benches);
