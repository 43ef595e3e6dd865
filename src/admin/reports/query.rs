//! `GET /api/reports` parameters: a time range (RFC 3339 or unix seconds), a product and
//! the format.

use super::HOUR_MS;
use crate::domain::Millis;

/// The longest range one request may ask for.
const MAX_RANGE_MS: Millis = 35 * 24 * HOUR_MS;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
