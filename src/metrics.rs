//! Prometheus registry and metric names (the names are a contract: see DESIGN.md).
//!
//! Counters are bumped where events happen (the proxy's `logging` phase, the ledger observer);
//! seat gauges are filled from the ledger's usage at scrape time, so they can never drift from
//! the ledger.

use crate::domain::{
    Millis, PoolUsage, QueueEvent, QueueResult, ReleaseReason, SeatRecord, Ticket,
};
use crate::ledger::LedgerObserver;
use crate::policy::classify::Action;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub seats_capacity: IntGaugeVec,
    pub seats_in_use: IntGaugeVec,
    pub seats_available: IntGaugeVec,
    pub pool_capacity: IntGaugeVec,
    pub pool_in_use: IntGaugeVec,
    pub logins: IntCounterVec,
    pub denials: IntCounterVec,
    pub checks: IntCounterVec,
    pub releases: IntCounterVec,
    pub request_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    pub overflow_used_seconds: IntGaugeVec,
    pub heartbeats: IntCounterVec,
    /// `session.idle_warning` banners shown (once per seat per stretch of idleness).
    pub idle_warnings: IntCounterVec,
    /// Requests of a seat holder that did not reset its idle timer (`session.activity`,
    /// `idle_by: input`).
    pub requests_ignored: IntCounterVec,
    pub self_service: IntCounterVec,
    pub bad_requests: IntCounterVec,
    pub store_up: IntGaugeVec,
    pub pool_view_age: prometheus::GaugeVec,
    /// Tickets in each pool's waiting line, from the ledger's usage at scrape time.
    pub queue_length: IntGaugeVec,
    /// Join → seat, for tickets whose login took the seat held for them.
    pub queue_wait: HistogramVec,
    /// Tickets that left the line (or could not join), by `QueueResult`.
    pub queue_total: IntCounterVec,
    /// Line events the reports' hours are built from, until the sampler takes them.
    queue_samples: std::sync::Mutex<QueueSamples>,
}

/// Joins and waits since the reports sampler last took them (`Metrics::take_queue_samples`):
/// the line's peaks between two samples and the waits of this gateway's admissions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueSamples {
    /// (product, when, the joining ticket's position: the line was at least this long).
    pub joins: Vec<(String, Millis, u32)>,
    /// (product, when admitted, wait in ms).
    pub waits: Vec<(String, Millis, Millis)>,
}

/// Bounds the samples kept when nothing takes them (no sampler running): a scrape-sized
/// memory, never a growing one.
const MAX_QUEUE_SAMPLES: usize = 10_000;

/// Wait buckets from a second to an hour (a line's `max_wait` defaults to 30 minutes).
const QUEUE_WAIT_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];

/// Client TLS handshakes that failed or timed out. pingora reports them only as log lines, so
/// the process's logger counts them (`count_log_line`); one process-wide counter, registered
/// in every registry.
pub static TLS_HANDSHAKE_FAILURES: std::sync::LazyLock<IntCounter> =
    std::sync::LazyLock::new(|| {
        IntCounter::new(
            "seatgate_tls_handshake_failures_total",
            "Client TLS handshakes that failed or timed out.",
        )
        .expect("static metric definition")
    });

/// Bounds on state that client input could otherwise grow (admin throttle and credential
/// cache, page sessions, self-service tokens and holds, the access log's queue): counted each
/// time one is reached, so a flood shows on a dashboard instead of in memory.
pub static LIMITS_REACHED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "seatgate_limits_reached_total",
            "Times a bound on client-driven state was reached, by limit.",
        ),
        &["limit"],
    )
    .expect("static metric definition");
    for l in [
        "admin_failures",
        "admin_credentials",
        "admin_page_sessions",
        "self_service_tokens",
        "self_service_holds",
        "access_log_queue",
        "app_logouts",
    ] {
        c.with_label_values(&[l]);
    }
    c
});

/// Counts one time `limit` was reached.
pub fn limit_reached(limit: &str) {
    LIMITS_REACHED.with_label_values(&[limit]).inc();
}

/// Counts the log lines that are pingora's only report of an event worth a metric.
pub fn count_log_line(target: &str, message: &std::fmt::Arguments<'_>) {
    if target.starts_with("pingora_core::services::listening") {
        if let Some(s) = message.as_str() {
            if s.starts_with("Downstream handshake") {
                TLS_HANDSHAKE_FAILURES.inc();
            }
        } else if message.to_string().starts_with("Downstream handshake") {
            TLS_HANDSHAKE_FAILURES.inc();
        }
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "seatgate_request_duration_seconds",
                "Time from request to response end, as seen by the gateway (upstream included).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["product", "action"],
        )
        .expect("static metric definition");
        r.register(Box::new(request_duration.clone()))
            .expect("metric registered once");
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "seatgate_queue_wait_seconds",
                "Time from joining the waiting line to taking the seat held for the ticket.",
            )
            .buckets(QUEUE_WAIT_BUCKETS.to_vec()),
            &["product"],
        )
        .expect("static metric definition");
        r.register(Box::new(queue_wait.clone()))
            .expect("metric registered once");
        Metrics {
            queue_length: gauge(
                &r,
                "seatgate_queue_length",
                "Tickets in the pool's waiting line (waiting and ready).",
                &["product", "pool"],
            ),
            queue_wait,
            queue_total: counter(
                &r,
                "seatgate_queue_total",
                "Tickets that left the waiting line, by result (admitted, abandoned, expired, removed; full: a login that could not join).",
                &["product", "result"],
            ),
            queue_samples: Default::default(),
            seats_capacity: gauge(
                &r,
                "seatgate_seats_capacity",
                "Concurrent seats granted (all pools).",
                &["product"],
            ),
            seats_in_use: gauge(
                &r,
                "seatgate_seats_in_use",
                "Seats held, by state (active, standby, ending); their sum is the seats held.",
                &["product", "state"],
            ),
            seats_available: gauge(
                &r,
                "seatgate_seats_available",
                "Seats free right now (all pools).",
                &["product"],
            ),
            pool_capacity: gauge(
                &r,
                "seatgate_pool_capacity",
                "Concurrent seats granted, per pool.",
                &["product", "pool"],
            ),
            pool_in_use: gauge(
                &r,
                "seatgate_pool_in_use",
                "Seats held per pool, by state.",
                &["product", "pool", "state"],
            ),
            logins: counter(
                &r,
                "seatgate_logins_total",
                "Login attempts through the gateway.",
                &["product", "client", "result"],
            ),
            denials: counter(
                &r,
                "seatgate_denials_total",
                "Requests the gateway refused.",
                &["product", "client", "reason"],
            ),
            checks: counter(
                &r,
                "seatgate_checks_total",
                "Pass/fail availability checks.",
                &["product", "client", "result"],
            ),
            releases: counter(
                &r,
                "seatgate_seat_releases_total",
                "Seats released, by reason.",
                &["product", "reason"],
            ),
            store_errors: counter(
                &r,
                "seatgate_store_errors_total",
                "Store calls that failed.",
                &["product", "policy"],
            ),
            overflow_used_seconds: gauge(
                &r,
                "seatgate_overflow_used_seconds",
                "Pay-per-use overflow seat time used.",
                &["product", "pool"],
            ),
            heartbeats: counter(
                &r,
                "seatgate_heartbeats_total",
                "Presence heartbeats.",
                &["product", "result"],
            ),
            idle_warnings: counter(
                &r,
                "seatgate_idle_warnings_total",
                "Idle warnings shown before a seat would end for idleness.",
                &["product"],
            ),
            requests_ignored: counter(
                &r,
                "seatgate_requests_ignored_total",
                "Requests of a seat holder that did not count as activity.",
                &["product"],
            ),
            self_service: counter(
                &r,
                "seatgate_self_service_total",
                "Self-service offers and their use (offered, ended, already_gone, malformed, forged, expired, spent, wrong_product).",
                &["product", "result"],
            ),
            store_up: gauge(
                &r,
                "seatgate_store_up",
                "1 while the seat store answers and takes writes, else 0 (the seat gauges then show the last view).",
                &["product"],
            ),
            pool_view_age: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "seatgate_pool_view_age_seconds",
                        "Age of this gateway's view of a pool's counts (0 for the embedded store).",
                    ),
                    &["product", "pool"],
                )
                .expect("static metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            bad_requests: {
                let c = counter(
                    &r,
                    "seatgate_bad_requests_total",
                    "Requests refused as malformed or hostile before anything else, by reason.",
                    &["reason"],
                );
                for b in crate::policy::hostile::BadRequest::all() {
                    c.with_label_values(&[b.reason()]);
                }
                for reason in ["ambiguous_user", "ambiguous_session", "bad_login"] {
                    c.with_label_values(&[reason]);
                }
                c
            },
            request_duration,
            registry: {
                // Already registered in an earlier registry of this process is fine: each
                // registry gathers the same shared value.
                let _ = r.register(Box::new(TLS_HANDSHAKE_FAILURES.clone()));
                let _ = r.register(Box::new(LIMITS_REACHED.clone()));
                r
            },
        }
    }

    /// Sets the seat gauges from the ledger's view, then renders the text format.
    pub fn render(&self, usage: &[PoolUsage]) -> String {
        let mut per_product: std::collections::BTreeMap<&str, [u32; 5]> = Default::default();
        for u in usage {
            let labels = [u.product.as_str(), u.pool.as_str()];
            let active = u.in_use.saturating_sub(u.standby + u.ending);
            self.pool_capacity
                .with_label_values(&labels)
                .set(u.capacity as i64);
            for (state, n) in [
                ("active", active),
                ("standby", u.standby),
                ("ending", u.ending),
            ] {
                self.pool_in_use
                    .with_label_values(&[u.product.as_str(), u.pool.as_str(), state])
                    .set(n as i64);
            }
            self.overflow_used_seconds
                .with_label_values(&labels)
                .set(u.overflow_used_seconds as i64);
            self.queue_length
                .with_label_values(&labels)
                .set(u.queue_length as i64);
            let t = per_product.entry(u.product.as_str()).or_default();
            for (slot, n) in
                t.iter_mut()
                    .zip([u.capacity, u.available, active, u.standby, u.ending])
            {
                *slot += n;
            }
        }
        for (product, [capacity, available, active, standby, ending]) in per_product {
            self.seats_capacity
                .with_label_values(&[product])
                .set(capacity as i64);
            self.seats_available
                .with_label_values(&[product])
                .set(available as i64);
            for (state, n) in [("active", active), ("standby", standby), ("ending", ending)] {
                self.seats_in_use
                    .with_label_values(&[product, state])
                    .set(n as i64);
            }
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The store's health at scrape time: up per product, and each pool view's age.
    pub fn set_store(&self, up: bool, ages: &[(&str, &str, Option<u64>)]) {
        let mut products: Vec<&str> = ages.iter().map(|a| a.0).collect();
        products.dedup();
        for p in products {
            self.store_up.with_label_values(&[p]).set(i64::from(up));
        }
        for (product, pool, age) in ages {
            if let Some(ms) = age {
                self.pool_view_age
                    .with_label_values(&[product, pool])
                    .set(*ms as f64 / 1000.0);
            }
        }
    }

    /// Resolves a product's per-request series; `clients` are its client kinds in config
    /// order followed by `default`.
    pub fn series(&self, product: &str, clients: &[String]) -> ProductSeries {
        ProductSeries {
            checks: clients
                .iter()
                .map(|c| ["pass", "fail"].map(|r| self.checks.with_label_values(&[product, c, r])))
                .collect(),
            check_denials: clients
                .iter()
                .map(|c| self.denials.with_label_values(&[product, c, "check_full"]))
                .collect(),
            durations: Action::ALL
                .iter()
                .map(|a| {
                    self.request_duration
                        .with_label_values(&[product, a.label()])
                })
                .collect(),
        }
    }

    /// Makes every label combination of a product visible at 0 before anything happened, so
    /// dashboards and `rate()` work from the first scrape.
    pub fn prime(&self, product: &str, clients: &[String]) {
        for reason in ReleaseReason::ALL {
            self.releases.with_label_values(&[product, reason.as_str()]);
        }
        self.idle_warnings.with_label_values(&[product]);
        self.requests_ignored.with_label_values(&[product]);
        // Every product, queue on or not (like the heartbeat and self-service series): a
        // reload that turns a line on finds its series there, and the dashboard's panels
        // have a line from the first scrape.
        for r in QueueResult::ALL {
            self.queue_total.with_label_values(&[product, r.as_str()]);
        }
        self.queue_wait.with_label_values(&[product]);
        for c in clients {
            for r in ["admitted", "denied", "failed"] {
                self.logins.with_label_values(&[product, c, r]);
            }
        }
    }
}

/// One product's per-request series, resolved once per config load: a check or a proxied
/// request then bumps atomics instead of hashing its label values under the vector's lock.
pub struct ProductSeries {
    /// Per client (`Product::clients` order, then the built-in `default`): pass, fail.
    checks: Vec<[IntCounter; 2]>,
    /// Per client: `seatgate_denials_total{reason="check_full"}`.
    check_denials: Vec<IntCounter>,
    /// Per action, indexed by `Action as usize`.
    durations: Vec<Histogram>,
}

impl ProductSeries {
    fn client(&self, client: Option<usize>) -> usize {
        client
            .filter(|&i| i < self.check_denials.len())
            .unwrap_or(self.check_denials.len() - 1)
    }

    pub fn check(&self, client: Option<usize>, pass: bool) {
        self.checks[self.client(client)][usize::from(!pass)].inc();
    }

    pub fn check_denied(&self, client: Option<usize>) {
        self.check_denials[self.client(client)].inc();
    }

    pub fn duration(&self, action: Action, secs: f64) {
        self.durations[action as usize].observe(secs);
    }
}

impl Metrics {
    /// The line events since the last call (the reports sampler's).
    pub fn take_queue_samples(&self) -> QueueSamples {
        std::mem::take(&mut *self.queue_samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LedgerObserver for Metrics {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason) {
        // Exempt and named sessions never held a seat, so ending one releases none.
        if seat.state.uncounted() {
            return;
        }
        self.releases
            .with_label_values(&[seat.pool.product.as_str(), reason.as_str()])
            .inc();
    }

    fn queue_event(&self, ticket: &Ticket, ev: QueueEvent, at: Millis) {
        let product = ticket.pool.product.as_str();
        let samples = || self.queue_samples.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            QueueEvent::Joined => {
                let mut s = samples();
                if s.joins.len() < MAX_QUEUE_SAMPLES {
                    s.joins.push((product.to_string(), at, ticket.position));
                }
            }
            QueueEvent::Ready => {}
            QueueEvent::Left(result) => {
                self.queue_total
                    .with_label_values(&[product, result.as_str()])
                    .inc();
                if result == QueueResult::Admitted {
                    let wait = at.saturating_sub(ticket.joined_at);
                    self.queue_wait
                        .with_label_values(&[product])
                        .observe(wait as f64 / 1000.0);
                    let mut s = samples();
                    if s.waits.len() < MAX_QUEUE_SAMPLES {
                        s.waits.push((product.to_string(), at, wait));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PoolKey, SeatId, TicketKey, TicketState};

    fn ticket(product: &str, joined_at: Millis, position: u32) -> Ticket {
        let pool = PoolKey::new(product, "default");
        Ticket {
            id: SeatId(7),
            key: TicketKey::new(&pool, "c"),
            pool,
            user: Some("ann".into()),
            client: "web".into(),
            joined_at,
            last_poll: joined_at,
            state: TicketState::Waiting,
            ready_until: None,
            position,
        }
    }

    fn usage(queue_length: u32) -> PoolUsage {
        PoolUsage {
            product: "crm".into(),
            pool: "default".into(),
            capacity: 1,
            in_use: 1,
            available: 0,
            peak: 1,
            denied: 0,
            standby: 0,
            ending: 0,
            overflow_used_seconds: 0,
            queue_length,
        }
    }

    /// The value of one series line of `text`, e.g. `seatgate_queue_length{...}`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_line_is_primed_counted_and_timed() {
        let m = Metrics::new();
        m.prime("crm", &["default".to_string()]);
        let text = m.render(&[usage(2)]);
        assert_eq!(
            value(
                &text,
                r#"seatgate_queue_length{pool="default",product="crm"}"#
            ),
            Some(2.0)
        );
        for r in ["admitted", "abandoned", "expired", "removed", "full"] {
            let series = format!(r#"seatgate_queue_total{{product="crm",result="{r}"}}"#);
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            value(&text, r#"seatgate_queue_wait_seconds_count{product="crm"}"#),
            Some(0.0)
        );

        let t = ticket("crm", 10_000, 2);
        m.queue_event(&t, QueueEvent::Joined, 10_000);
        m.queue_event(&t, QueueEvent::Ready, 40_000);
        m.queue_event(&t, QueueEvent::Left(QueueResult::Admitted), 52_000);
        m.queue_event(&t, QueueEvent::Left(QueueResult::Removed), 53_000);
        m.queue_event(&t, QueueEvent::Left(QueueResult::LineFull), 54_000);
        let text = m.render(&[usage(0)]);
        let total = |r: &str| {
            value(
                &text,
                &format!(r#"seatgate_queue_total{{product="crm",result="{r}"}}"#),
            )
        };
        assert_eq!(
            (
                total("admitted"),
                total("removed"),
                total("full"),
                total("expired")
            ),
            (Some(1.0), Some(1.0), Some(1.0), Some(0.0))
        );
        // 42 s: above the 30 s bucket, within the 60 s one.
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"seatgate_queue_wait_seconds_bucket{{product="crm",le="{le}"}}"#),
            )
        };
        assert_eq!(
            (bucket("30"), bucket("60"), bucket("3600")),
            (Some(0.0), Some(1.0), Some(1.0))
        );
        assert_eq!(
            value(&text, r#"seatgate_queue_wait_seconds_sum{product="crm"}"#),
            Some(42.0)
        );
        assert_eq!(
            value(
                &text,
                r#"seatgate_queue_length{pool="default",product="crm"}"#
            ),
            Some(0.0)
        );

        // The reports take the joins and admissions once.
        let s = m.take_queue_samples();
        assert_eq!(s.joins, vec![("crm".to_string(), 10_000, 2)]);
        assert_eq!(s.waits, vec![("crm".to_string(), 52_000, 42_000)]);
        assert_eq!(m.take_queue_samples(), QueueSamples::default());
    }

    #[test]
    fn samples_nobody_takes_stay_bounded() {
        let m = Metrics::new();
        let t = ticket("crm", 0, 1);
        for i in 0..(MAX_QUEUE_SAMPLES as u64 + 5) {
            m.queue_event(&t, QueueEvent::Joined, i);
            m.queue_event(&t, QueueEvent::Left(QueueResult::Admitted), i);
        }
        let s = m.take_queue_samples();
        assert_eq!(
            (s.joins.len(), s.waits.len()),
            (MAX_QUEUE_SAMPLES, MAX_QUEUE_SAMPLES)
        );
        // The counters still count every one.
        let text = m.render(&[]);
        assert_eq!(
            value(
                &text,
                r#"seatgate_queue_total{product="crm",result="admitted"}"#
            ),
            Some(MAX_QUEUE_SAMPLES as f64 + 5.0)
        );
    }
}
