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
//!
//! Kept in memory for [`RETENTION_HOURS`]; a restart starts the report afresh (the audit log
//! remains the durable record).

use crate::app::App;
use crate::ledger::{now_ms, Millis, PoolUsage, SeatRecord};
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::core::Collector;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const HOUR_MS: Millis = 3_600_000;
const RETENTION_HOURS: u64 = 35 * 24;
/// The longest range one request may ask for.
const MAX_RANGE_MS: Millis = 35 * 24 * HOUR_MS;
/// A gap longer than this between samples (a suspended VM, a stalled runtime) is not
/// credited to anybody's hours.
const MAX_CREDIT_MS: Millis = 30_000;
/// Bounds the per-user map of one product-hour (user names come from login forms).
const MAX_USERS_PER_BUCKET: usize = 10_000;
const SEAT_DENIALS: [&str; 4] = ["full", "group_max", "user_max", "overflow_spent"];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bucket {
    pub peak_in_use: u32,
    pub capacity: u32,
    pub denials: u64,
    pub checks: u64,
    pub checks_failed: u64,
    /// Milliseconds each user held a seat.
    pub user_ms: BTreeMap<String, u64>,
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

        let mut per_product: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
        for u in usage {
            let e = per_product.entry(u.product.as_str()).or_default();
            e.0 += u.in_use;
            e.1 += u.capacity;
            let key = (u.product.clone(), u.pool.clone());
            let before = st.last_peaks.insert(key, u.peak);
            if !first && before.is_some_and(|b| u.peak > b) {
                e.2 = e.2.max(u.peak);
            }
        }
        for (product, (in_use, capacity, record)) in per_product {
            let b = st.buckets.entry((hour, product.to_string())).or_default();
            b.peak_in_use = b.peak_in_use.max(in_use).max(record);
            b.capacity = b.capacity.max(capacity);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    pub from: Millis,
    pub to: Millis,
    pub product: Option<String>,
    pub format: Format,
}

/// RFC 3339 (`Z` or a `±HH:MM` offset) or unix seconds, as unix milliseconds.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(|secs| secs * 1000)
            .map_err(|e| e.to_string());
    }
    let bad = || format!("`{s}` is neither RFC 3339 (2024-05-01T09:00:00Z) nor unix seconds");
    if !s.is_ascii() {
        return Err(bad());
    }
    // humantime reads UTC only; a numeric offset is applied here.
    let (base, offset_s): (String, i64) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((b, o))
            if (o.starts_with('+') || o.starts_with('-'))
                && o.as_bytes()[3] == b':'
                && o[1..3]
                    .bytes()
                    .chain(o[4..].bytes())
                    .all(|c| c.is_ascii_digit()) =>
        {
            let h: i64 = o[1..3].parse().map_err(|_| bad())?;
            let m: i64 = o[4..].parse().map_err(|_| bad())?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    if !base.contains('T') && !base.contains('t') {
        return Err(bad());
    }
    let t = humantime::parse_rfc3339(&base).map_err(|_| bad())?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis() as i64
        - offset_s * 1000;
    u64::try_from(ms).map_err(|_| bad())
}

pub fn parse_query(query: Option<&str>, now: Millis) -> Result<ReportQuery, String> {
    let (mut from, mut to, mut product, mut format) = (None, None, None, Format::Json);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if v.len() > 64 {
            return Err(format!("`{k}` is too long"));
        }
        match k.as_ref() {
            "from" => from = Some(parse_time(&v).map_err(|e| format!("from: {e}"))?),
            "to" => to = Some(parse_time(&v).map_err(|e| format!("to: {e}"))?),
            "product" => product = Some(v.into_owned()).filter(|p| !p.is_empty()),
            "format" => {
                format = match v.as_ref() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    other => return Err(format!("unknown format `{other}` (json, csv)")),
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (from, to, product, format)"
                ))
            }
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(24 * HOUR_MS));
    if from >= to {
        return Err("`from` must be before `to`".into());
    }
    if to - from > MAX_RANGE_MS {
        return Err("the range may span at most 35 days".into());
    }
    Ok(ReportQuery {
        from,
        to,
        product,
        format,
    })
}

fn hours(ms: u64) -> f64 {
    (ms as f64 / HOUR_MS as f64 * 10_000.0).round() / 10_000.0
}

fn hour_label(h: u64) -> String {
    super::rfc3339(h * HOUR_MS).replace(".000Z", "Z")
}

pub fn to_json(q: &ReportQuery, rows: &[(u64, String, Bucket)]) -> Value {
    let mut totals: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let out: Vec<Value> = rows
        .iter()
        .map(|(h, product, b)| {
            for (u, ms) in &b.user_ms {
                *totals.entry((product, u)).or_default() += ms;
            }
            json!({
                "product": product,
                "hour": hour_label(*h),
                "peak_in_use": b.peak_in_use,
                "capacity": b.capacity,
                "denials": b.denials,
                "checks": b.checks,
                "checks_failed": b.checks_failed,
                "user_hours": b.user_ms.iter().map(|(u, ms)| (u.clone(), json!(hours(*ms)))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({
        "from": super::rfc3339(q.from),
        "to": super::rfc3339(q.to),
        "sample_seconds": SAMPLE_EVERY.as_secs(),
        "rows": out,
        "users": totals.iter().map(|((p, u), ms)| json!({"product": p, "user": u, "hours": hours(*ms)})).collect::<Vec<_>>(),
    })
}

/// One CSV field: quoted when needed, and defused when a spreadsheet would read it as a
/// formula (user names come from login forms).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One line per product and hour (`user` empty, `user_hours` their sum), then one per user
/// who held a seat in that hour.
pub fn to_csv(rows: &[(u64, String, Bucket)]) -> String {
    let mut out = String::from(
        "product,hour,peak_in_use,capacity,denials,checks,checks_failed,user,user_hours\n",
    );
    for (h, product, b) in rows {
        let (p, hour) = (csv_field(product), hour_label(*h));
        out.push_str(&format!(
            "{p},{hour},{},{},{},{},{},,{}\n",
            b.peak_in_use,
            b.capacity,
            b.denials,
            b.checks,
            b.checks_failed,
            hours(b.user_ms.values().sum())
        ));
        for (u, ms) in &b.user_ms {
            out.push_str(&format!(
                "{p},{hour},,,,,,{},{}\n",
                csv_field(u),
                hours(*ms)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SeatState;

    fn usage(in_use: u32, peak: u32) -> PoolUsage {
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
    fn times_and_queries() {
        assert_eq!(parse_time("1714554000").unwrap(), 1_714_554_000_000);
        assert_eq!(
            parse_time("2024-05-01T09:00:00Z").unwrap(),
            1_714_554_000_000
        );
        assert_eq!(
            parse_time("2024-05-01T11:00:00+02:00").unwrap(),
            1_714_554_000_000
        );
        assert_eq!(
            parse_time("2024-05-01T08:30:00-00:30").unwrap(),
            1_714_554_000_000
        );
        for bad in [
            "",
            "yesterday",
            "2024-05-01T09:00:00Ω+0:00",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "-5",
            "1e9",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        let now = 1_714_554_000_000;
        let q = parse_query(None, now).unwrap();
        assert_eq!(
            (q.from, q.to, q.format),
            (now - 24 * HOUR_MS, now, Format::Json)
        );
        let q = parse_query(
            Some("from=1714550400&to=1714554000&format=csv&product=crm"),
            now,
        )
        .unwrap();
        assert_eq!(q.product.as_deref(), Some("crm"));
        assert_eq!(q.format, Format::Csv);
        assert_eq!(
            parse_query(Some("from=1714554000&to=1714550400"), now).unwrap_err(),
            "`from` must be before `to`"
        );
        assert!(parse_query(Some("format=xml"), now).is_err());
        assert!(parse_query(Some("since=1"), now).is_err());
        assert!(
            parse_query(Some("from=1&to=99999999"), now).is_err(),
            "range too long"
        );
    }

    #[test]
    fn csv_quotes_and_defuses_fields() {
        let mut b = Bucket {
            peak_in_use: 2,
            capacity: 5,
            ..Default::default()
        };
        b.user_ms.insert("=cmd()".into(), HOUR_MS / 2);
        b.user_ms.insert("a,\"b\"".into(), HOUR_MS);
        let csv = to_csv(&[(100, "crm".into(), b)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "product,hour,peak_in_use,capacity,denials,checks,checks_failed,user,user_hours"
        );
        assert_eq!(lines[1], "crm,1970-01-05T04:00:00Z,2,5,0,0,0,,1.5");
        assert_eq!(lines[2], "crm,1970-01-05T04:00:00Z,,,,,,'=cmd(),0.5");
        assert_eq!(lines[3], "crm,1970-01-05T04:00:00Z,,,,,,\"a,\"\"b\"\"\",1");
    }
}
