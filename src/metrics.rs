//! Prometheus registry and metric names (the names are a contract: see DESIGN.md).
//!
//! Counters are bumped where events happen (the proxy's `logging` phase, the ledger observer);
//! seat gauges are filled from the ledger's usage at scrape time, so they can never drift from
//! the ledger.

use crate::domain::{PoolUsage, ReleaseReason, SeatRecord};
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
}

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
        Metrics {
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
}
