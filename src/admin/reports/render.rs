//! A report's two shapes: JSON rows with per-user totals, and CSV for spreadsheets.

use super::{Bucket, ReportQuery, HOUR_MS, SAMPLE_EVERY};
use crate::admin::views::rfc3339;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn hours(ms: u64) -> f64 {
    (ms as f64 / HOUR_MS as f64 * 10_000.0).round() / 10_000.0
}

/// A median wait in seconds (tenths), or `None` for an hour without admissions from the line.
fn median_seconds(b: &Bucket) -> Option<f64> {
    b.median_wait_ms()
        .map(|ms| (ms as f64 / 100.0).round() / 10.0)
}

fn hour_label(h: u64) -> String {
    rfc3339(h * HOUR_MS).replace(".000Z", "Z")
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
                "peak_queue_length": b.peak_queue_length,
                "queue_admitted": b.queue_admitted,
                "median_wait_seconds": median_seconds(b),
                "user_hours": b.user_ms.iter().map(|(u, ms)| (u.clone(), json!(hours(*ms)))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    json!({
        "from": rfc3339(q.from),
        "to": rfc3339(q.to),
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
/// who held a seat in that hour. The line's columns come last, so readers of the earlier
/// columns by position are not moved; `median_wait_seconds` is empty without admissions.
pub fn to_csv(rows: &[(u64, String, Bucket)]) -> String {
    let mut out = String::from(
        "product,hour,peak_in_use,capacity,denials,checks,checks_failed,user,user_hours,\
         peak_queue_length,queue_admitted,median_wait_seconds\n",
    );
    for (h, product, b) in rows {
        let (p, hour) = (csv_field(product), hour_label(*h));
        out.push_str(&format!(
            "{p},{hour},{},{},{},{},{},,{},{},{},{}\n",
            b.peak_in_use,
            b.capacity,
            b.denials,
            b.checks,
            b.checks_failed,
            hours(b.user_ms.values().sum()),
            b.peak_queue_length,
            b.queue_admitted,
            median_seconds(b).map_or(String::new(), |s| s.to_string()),
        ));
        for (u, ms) in &b.user_ms {
            out.push_str(&format!(
                "{p},{hour},,,,,,{},{},,,\n",
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

    #[test]
    fn csv_quotes_and_defuses_fields() {
        let mut b = Bucket {
            peak_in_use: 2,
            capacity: 5,
            ..Default::default()
        };
        b.user_ms.insert("=cmd()".into(), HOUR_MS / 2);
        b.user_ms.insert("a,\"b\"".into(), HOUR_MS);
        let csv = to_csv(&[(100, "crm".into(), b.clone())]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "product,hour,peak_in_use,capacity,denials,checks,checks_failed,user,user_hours,\
             peak_queue_length,queue_admitted,median_wait_seconds"
        );
        assert_eq!(lines[1], "crm,1970-01-05T04:00:00Z,2,5,0,0,0,,1.5,0,0,");
        assert_eq!(lines[2], "crm,1970-01-05T04:00:00Z,,,,,,'=cmd(),0.5,,,");
        assert_eq!(
            lines[3],
            "crm,1970-01-05T04:00:00Z,,,,,,\"a,\"\"b\"\"\",1,,,"
        );
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() >= columns));

        // An hour with admissions from the line: its peak, count and median (tenths of s).
        b.peak_queue_length = 3;
        b.queue_admitted = 2;
        b.queue_waits_ms = vec![12_340, 20_000];
        let csv = to_csv(&[(100, "crm".into(), b.clone())]);
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",1.5,3,2,16.2"),
            "{csv}"
        );
        let q = ReportQuery {
            from: 0,
            to: 1,
            product: None,
            format: super::super::Format::Json,
        };
        let row = &to_json(&q, &[(100, "crm".into(), b)])["rows"][0];
        assert_eq!(
            (
                &row["peak_queue_length"],
                &row["queue_admitted"],
                &row["median_wait_seconds"]
            ),
            (&json!(3), &json!(2), &json!(16.2))
        );
        let empty = to_json(&q, &[(100, "crm".into(), Bucket::default())]);
        assert_eq!(empty["rows"][0]["median_wait_seconds"], Value::Null);
    }
}
