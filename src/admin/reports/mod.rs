//! Usage reports per product and hour: peak seats in use, denials, checks and per-user hours.
//!
//! Built from samples, not from the audit log (which may be off, and holds no checks): every
//! [`SAMPLE_EVERY`] the sampler reads the ledger's usage and sessions (so it sees every
//! replica's seats with a shared store) and this gateway's denial and check counters.
//!
//! * Peak in use is the largest sampled count, raised to the pool's all-time peak whenever
//!   that moved since the last sample: a peak that set a record between two samples is not
//!   lost, even if the seats were gone again by the next one.
//! * Denials (logins refused for want of a seat: full, group_max, user_max, overflow_spent)
//!   and checks are this gateway's counters; with several replicas each reports its own.
//! * User hours add the sampling interval for every seat-holding session of the user, so
//!   they are exact to about one interval per session.
//! * Peak line length is the largest sampled `queue_length` (all pools of the product, from
//!   the store: every replica's tickets), raised by the position of every ticket that joined
//!   on this gateway since (the line was at least that long), so a burst between two samples
//!   is not lost. The median wait is over this gateway's admissions from the line in that
//!   hour (the ledger's `Left(Admitted)` events, as `seatgate_queue_wait_seconds` counts them):
//!   with several replicas each reports its own, like denials.
//!
//! Kept in memory for [`RETENTION_HOURS`]; a restart starts the report afresh (the audit log
//! remains the durable record).

use crate::app::App;
use crate::domain::{now_ms, Millis, PoolUsage, SeatRecord};
use crate::metrics::{Metrics, QueueSamples};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::core::Collector;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod query;
mod render;

pub use query::{parse_query, parse_time, Format, ReportQuery};
pub use render::{to_csv, to_json};

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const HOUR_MS: Millis = 3_600_000;
const RETENTION_HOURS: u64 = 35 * 24;
/// A gap longer than this between samples (a suspended VM, a stalled runtime) is not
/// credited to anybody's hours.
const MAX_CREDIT_MS: Millis = 30_000;
/// Bounds the per-user map of one product-hour (user names come from login forms).
const MAX_USERS_PER_BUCKET: usize = 10_000;
const SEAT_DENIALS: [&str; 4] = ["full", "group_max", "user_max", "overflow_spent"];
/// Waits kept per product-hour for its median; past it, a uniform sample of them (reservoir),
/// so the median stays unbiased and the memory bounded.
const MAX_WAITS_PER_BUCKET: usize = 10_000;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bucket {
    pub peak_in_use: u32,
    pub capacity: u32,
    pub denials: u64,
    pub checks: u64,
    pub checks_failed: u64,
    /// Milliseconds each user held a seat.
    pub user_ms: BTreeMap<String, u64>,
    /// The longest the product's waiting lines were together (tickets waiting and ready).
    pub peak_queue_length: u32,
    /// Tickets admitted from the line in this hour (on this gateway).
    pub queue_admitted: u64,
    /// Their waits (ms): all of them, or a uniform sample of [`MAX_WAITS_PER_BUCKET`].
    pub queue_waits_ms: Vec<u64>,
}

impl Bucket {
    /// The median wait of the hour's admissions from the line; `None` when there were none.
    pub fn median_wait_ms(&self) -> Option<u64> {
        let mut w = self.queue_waits_ms.clone();
        if w.is_empty() {
            return None;
        }
        w.sort_unstable();
        let mid = w.len() / 2;
        Some(if w.len() % 2 == 1 {
            w[mid]
        } else {
            (w[mid - 1] + w[mid]) / 2
        })
    }

    fn add_wait(&mut self, wait_ms: u64) {
        self.queue_admitted += 1;
        if self.queue_waits_ms.len() < MAX_WAITS_PER_BUCKET {
            self.queue_waits_ms.push(wait_ms);
        } else {
            // Algorithm R: the n-th wait replaces a kept one with probability kept/n.
            let i = rand::random_range(0..self.queue_admitted) as usize;
            if let Some(slot) = self.queue_waits_ms.get_mut(i) {
                *slot = wait_ms;
            }
        }
    }
}

/// Per-product event counters at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub denials: u64,
    pub checks: u64,
    pub checks_failed: u64,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<(u64, String), Bucket>,
    last_at: Option<Millis>,
    last_counts: HashMap<String, Counts>,
    last_peaks: HashMap<(String, String), u32>,
}

#[derive(Default)]
pub struct Reports {
    state: Mutex<State>,
}

impl Reports {
    /// Folds one sample taken at `now` into the hour buckets (pure: tested below).
    pub fn sample(
        &self,
        now: Millis,
        usage: &[PoolUsage],
        sessions: &[SeatRecord],
        counts: &HashMap<String, Counts>,
    ) {
        let hour = now / HOUR_MS;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let credit = st
            .last_at
            .map_or(0, |t| now.saturating_sub(t))
            .min(MAX_CREDIT_MS);
        let first = st.last_at.is_none();
        st.last_at = Some(now);

        let mut per_product: BTreeMap<&str, (u32, u32, u32, u32)> = BTreeMap::new();
        for u in usage {
            let e = per_product.entry(u.product.as_str()).or_default();
            e.0 += u.in_use;
            e.1 += u.capacity;
            e.3 += u.queue_length;
            let key = (u.product.clone(), u.pool.clone());
            let before = st.last_peaks.insert(key, u.peak);
            if !first && before.is_some_and(|b| u.peak > b) {
                e.2 = e.2.max(u.peak);
            }
        }
        for (product, (in_use, capacity, record, line)) in per_product {
            let b = st.buckets.entry((hour, product.to_string())).or_default();
            b.peak_in_use = b.peak_in_use.max(in_use).max(record);
            b.capacity = b.capacity.max(capacity);
            b.peak_queue_length = b.peak_queue_length.max(line);
        }
        for (product, c) in counts {
            let before = st
                .last_counts
                .insert(product.clone(), *c)
                .unwrap_or_default();
            let delta = Counts {
                denials: c.denials.saturating_sub(before.denials),
                checks: c.checks.saturating_sub(before.checks),
                checks_failed: c.checks_failed.saturating_sub(before.checks_failed),
            };
            if delta != Counts::default() {
                let b = st.buckets.entry((hour, product.clone())).or_default();
                b.denials += delta.denials;
                b.checks += delta.checks;
                b.checks_failed += delta.checks_failed;
            }
        }
        if credit > 0 {
            for s in sessions.iter().filter(|s| s.state.holds_seat()) {
                let b = st
                    .buckets
                    .entry((hour, s.pool.product.clone()))
                    .or_default();
                let user = s.user.clone().unwrap_or_default();
                if b.user_ms.len() < MAX_USERS_PER_BUCKET || b.user_ms.contains_key(&user) {
                    *b.user_ms.entry(user).or_default() += credit;
                }
            }
        }
        let oldest = hour.saturating_sub(RETENTION_HOURS);
        st.buckets.retain(|(h, _), _| *h >= oldest);
    }

    /// Folds the line's joins and admissions since the last sample into the hours they
    /// happened in (pure: tested below).
    pub fn queue(&self, samples: &QueueSamples) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (product, at, position) in &samples.joins {
            let b = st
                .buckets
                .entry((at / HOUR_MS, product.clone()))
                .or_default();
            b.peak_queue_length = b.peak_queue_length.max(*position);
        }
        for (product, at, wait) in &samples.waits {
            let b = st
                .buckets
                .entry((at / HOUR_MS, product.clone()))
                .or_default();
            b.add_wait(*wait);
        }
    }

    /// The buckets of hours overlapping `[from, to)` for products `keep` accepts.
    pub fn range(
        &self,
        from: Millis,
        to: Millis,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(u64, String, Bucket)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.buckets
            .range((from / HOUR_MS, String::new())..)
            .take_while(|((h, _), _)| h * HOUR_MS < to)
            .filter(|((_, p), _)| keep(p))
            .map(|((h, p), b)| (*h, p.clone(), b.clone()))
            .collect()
    }
}

/// This gateway's seat denials and checks per product, read from the metrics registry.
pub fn counts(m: &Metrics) -> HashMap<String, Counts> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    let label = |metric: &prometheus::proto::Metric, name: &str| {
        metric
            .get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value().to_string())
            .unwrap_or_default()
    };
    for mf in m.denials.collect() {
        for metric in mf.get_metric() {
            if SEAT_DENIALS.contains(&label(metric, "reason").as_str()) {
                out.entry(label(metric, "product")).or_default().denials +=
                    metric.get_counter().get_value() as u64;
            }
        }
    }
    for mf in m.checks.collect() {
        for metric in mf.get_metric() {
            let n = metric.get_counter().get_value() as u64;
            let c = out.entry(label(metric, "product")).or_default();
            c.checks += n;
            if label(metric, "result") == "fail" {
                c.checks_failed += n;
            }
        }
    }
    out
}

/// Samples the ledger into the report every [`SAMPLE_EVERY`].
pub struct Sampler {
    pub app: Arc<App>,
    pub reports: Arc<Reports>,
}

impl Sampler {
    pub async fn once(&self) {
        let now = now_ms();
        let usage = self.app.ledger.usage(now).await;
        let sessions = self.app.ledger.sessions(now).await;
        // Taken whatever the store says: the events happened on this gateway either way.
        self.reports.queue(&self.app.metrics.take_queue_samples());
        match (usage, sessions) {
            (Ok(u), Ok(s)) => self.reports.sample(now, &u, &s, &counts(&self.app.metrics)),
            (Err(e), _) | (_, Err(e)) => log::debug!("report sample skipped: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.once().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SeatState;

    fn usage(in_use: u32, peak: u32) -> PoolUsage {
        queued(in_use, peak, 0)
    }

    fn queued(in_use: u32, peak: u32, queue_length: u32) -> PoolUsage {
        PoolUsage {
            product: "crm".into(),
            pool: "default".into(),
            capacity: 5,
            in_use,
            available: 5 - in_use,
            peak,
            denied: 0,
            standby: 0,
            ending: 0,
            overflow_used_seconds: 0,
            queue_length,
        }
    }

    fn seat(user: &str, state: SeatState) -> SeatRecord {
        SeatRecord {
            state,
            ..crate::admin::tests::seat("crm", user)
        }
    }

    fn counts(denials: u64, checks: u64, failed: u64) -> HashMap<String, Counts> {
        HashMap::from([(
            "crm".to_string(),
            Counts {
                denials,
                checks,
                checks_failed: failed,
            },
        )])
    }

    #[test]
    fn samples_fold_into_hours() {
        let r = Reports::default();
        let h0 = 100 * HOUR_MS;
        r.sample(
            h0 + 1_000,
            &[usage(1, 1)],
            &[seat("ann", SeatState::Active)],
            &counts(2, 0, 0),
        );
        r.sample(
            h0 + 3_000,
            &[usage(2, 2)],
            &[
                seat("ann", SeatState::Active),
                seat("bob", SeatState::Paused),
            ],
            &counts(3, 4, 1),
        );
        // The pool's record moved to 4 between samples, though only 1 is held now.
        r.sample(
            h0 + HOUR_MS + 1_000,
            &[usage(1, 4)],
            &[seat("ann", SeatState::Ending)],
            &counts(3, 4, 1),
        );
        let rows = r.range(h0, h0 + 2 * HOUR_MS, |_| true);
        assert_eq!(rows.len(), 2);
        let (h, p, b) = &rows[0];
        assert_eq!((*h, p.as_str()), (100, "crm"));
        assert_eq!(
            (
                b.peak_in_use,
                b.capacity,
                b.denials,
                b.checks,
                b.checks_failed
            ),
            (2, 5, 3, 4, 1)
        );
        // Paused seats hold none, so bob has no hours; ann gets the 2 s between samples.
        assert_eq!(b.user_ms, BTreeMap::from([("ann".to_string(), 2_000)]));
        let b1 = &rows[1].2;
        assert_eq!(b1.peak_in_use, 4);
        assert_eq!(b1.denials, 0);
        assert_eq!(b1.user_ms["ann"], MAX_CREDIT_MS, "a long gap is capped");
        assert!(r.range(h0, h0 + 2 * HOUR_MS, |p| p != "crm").is_empty());
        assert_eq!(r.range(h0 + HOUR_MS, h0 + 2 * HOUR_MS, |_| true).len(), 1);
        assert_eq!(r.range(h0, h0 + HOUR_MS, |_| true).len(), 1);
    }

    #[test]
    fn line_peaks_and_median_waits_per_hour() {
        let r = Reports::default();
        let h0 = 200 * HOUR_MS;
        let none = HashMap::new();
        r.sample(h0 + 1_000, &[queued(5, 5, 2)], &[], &none);
        // Between samples the line reached 4 (a ticket joined fourth) and emptied again.
        r.queue(&QueueSamples {
            joins: vec![("crm".into(), h0 + 2_000, 4), ("crm".into(), h0 + 2_500, 3)],
            waits: vec![
                ("crm".into(), h0 + 3_000, 30_000),
                ("crm".into(), h0 + 3_100, 10_000),
                ("crm".into(), h0 + 3_200, 90_000),
                // Admitted in the next hour: that hour's median.
                ("crm".into(), h0 + HOUR_MS + 5, 8_000),
                ("crm".into(), h0 + HOUR_MS + 6, 12_000),
            ],
        });
        r.sample(h0 + 3_000, &[queued(5, 5, 1)], &[], &none);
        let rows = r.range(h0, h0 + 2 * HOUR_MS, |_| true);
        assert_eq!(rows.len(), 2);
        let (b0, b1) = (&rows[0].2, &rows[1].2);
        assert_eq!((b0.peak_queue_length, b0.queue_admitted), (4, 3));
        assert_eq!(b0.median_wait_ms(), Some(30_000));
        assert_eq!((b1.queue_admitted, b1.median_wait_ms()), (2, Some(10_000)));
        assert_eq!(b1.peak_queue_length, 0);
        assert_eq!(Bucket::default().median_wait_ms(), None);
    }

    #[test]
    fn waits_past_the_bound_are_sampled_not_kept() {
        let mut b = Bucket::default();
        // Half the waits are 1 s, then half 9 s: the sample keeps both halves' median line.
        for i in 0..(2 * MAX_WAITS_PER_BUCKET as u64) {
            b.add_wait(if i % 2 == 0 { 1_000 } else { 9_000 });
        }
        assert_eq!(b.queue_admitted, 2 * MAX_WAITS_PER_BUCKET as u64);
        assert_eq!(b.queue_waits_ms.len(), MAX_WAITS_PER_BUCKET);
        let ones = b.queue_waits_ms.iter().filter(|w| **w == 1_000).count();
        assert!((4_000..6_000).contains(&ones), "{ones}");
    }
}
