//! Validators of single values shared by every section: methods, paths, header names and
//! matches, cookie names, dates, non-zero durations. Each names the key and, through the
//! entity (`ctx`: the product, pool or client kind it belongs to), the line.

use super::locate::Locator;
use crate::config::file;
use crate::config::{ConfigError, HeaderMatch, TextTest};
use http::{HeaderName, Method};
use std::time::Duration;

pub fn method(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<Method, ConfigError> {
    let up = s.to_ascii_uppercase();
    match up.as_str() {
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(up.as_bytes())
                .map_err(|_| loc.invalid(key, Some(ctx), &format!("unknown HTTP method `{s}`")))
        }
        _ => Err(loc.invalid(key, Some(ctx), &format!("unknown HTTP method `{s}`"))),
    }
}

pub fn path(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<String, ConfigError> {
    if !s.starts_with('/') || s.contains(char::is_whitespace) {
        return Err(loc.invalid(
            key,
            Some(ctx),
            &format!("`{s}` must be a path starting with /"),
        ));
    }
    Ok(s.to_string())
}

pub fn header_name(
    s: &str,
    key: &str,
    ctx: &str,
    loc: &Locator,
) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| loc.invalid(key, Some(ctx), &format!("`{s}` is not a valid header name")))
}

pub fn header_match(
    h: &file::HeaderMatchFile,
    key: &str,
    ctx: &str,
    loc: &Locator,
) -> Result<HeaderMatch, ConfigError> {
    let test = match (&h.value, &h.contains) {
        (None, None) => TextTest::Present,
        (Some(v), None) => TextTest::Equals(v.clone()),
        (None, Some(c)) => TextTest::Contains(c.clone()),
        (Some(_), Some(_)) => {
            return Err(loc.invalid(key, Some(ctx), "give `value` or `contains`, not both"))
        }
    };
    Ok(HeaderMatch {
        name: header_name(&h.name, &format!("{key}.name"), ctx, loc)?,
        test,
    })
}

pub fn cookie_name(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !ok {
        return Err(loc.invalid(key, Some(ctx), &format!("`{s}` is not a valid cookie name")));
    }
    Ok(s.to_string())
}

pub fn date_ms(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<u64, ConfigError> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|e| {
        loc.invalid(
            key,
            Some(ctx),
            &format!("`{s}` is not a date (YYYY-MM-DD or RFC 3339): {e}"),
        )
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

pub fn nonzero(d: Duration, key: &str, ctx: &str, loc: &Locator) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(loc.invalid(key, Some(ctx), "must be above zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product `crm` with its session keys, where errors are looked up.
    const SRC: &str = "products:
  - name: crm
    session:
      cookie: SID
      idle_timeout: 0s
    login:
      path: login
      method: GTE
    pools:
      - name: gold
        header: { name: X-Tier, value: gold, contains: old }
        grants:
          - { seats: 1, expires: 2024-13-01 }
";
    const LOC: Locator = Locator { src: SRC };

    fn err(r: Result<impl std::fmt::Debug, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn methods_are_the_usual_verbs_in_any_case() {
        assert_eq!(method("post", "k", "crm", &LOC).unwrap(), Method::POST);
        assert_eq!(
            method("OPTIONS", "k", "crm", &LOC).unwrap(),
            Method::OPTIONS
        );
        assert_eq!(
            err(method("GTE", "products[0].login.method", "crm", &LOC)),
            "products[0].login.method (line 8): unknown HTTP method `GTE`"
        );
        assert_eq!(
            err(method("CONNECT", "products[0].login.method", "crm", &LOC)),
            "products[0].login.method (line 8): unknown HTTP method `CONNECT`"
        );
    }

    #[test]
    fn paths_start_with_a_slash_and_have_no_spaces() {
        assert_eq!(path("/login", "k", "crm", &LOC).unwrap(), "/login");
        for bad in ["login", "/log in"] {
            assert_eq!(
                err(path(bad, "products[0].login.path", "crm", &LOC)),
                format!("products[0].login.path (line 7): `{bad}` must be a path starting with /")
            );
        }
    }

    #[test]
    fn header_names_and_matches() {
        assert_eq!(header_name("X-Tier", "k", "crm", &LOC).unwrap(), "x-tier");
        let h = |yaml: &str| serde_norway::from_str::<file::HeaderMatchFile>(yaml).unwrap();
        let m = |yaml: &str| header_match(&h(yaml), "products[0].pools[0].header", "gold", &LOC);
        assert_eq!(
            m("{ name: X-Tier }").unwrap(),
            HeaderMatch {
                name: HeaderName::from_static("x-tier"),
                test: TextTest::Present
            }
        );
        assert_eq!(
            m("{ name: X-Tier, value: gold }").unwrap().test,
            TextTest::Equals("gold".into())
        );
        assert_eq!(
            m("{ name: X-Tier, contains: old }").unwrap().test,
            TextTest::Contains("old".into())
        );
        assert_eq!(
            err(m("{ name: X-Tier, value: gold, contains: old }")),
            "products[0].pools[0].header (line 11): give `value` or `contains`, not both"
        );
        assert_eq!(
            err(m("{ name: \"X Tier\" }")),
            "products[0].pools[0].header.name (line 10): `X Tier` is not a valid header name"
        );
    }

    #[test]
    fn cookie_names_are_tokens() {
        assert_eq!(cookie_name("SID", "k", "crm", &LOC).unwrap(), "SID");
        for bad in ["", "S;D", "S D", "a=b"] {
            assert_eq!(
                err(cookie_name(bad, "products[0].session.cookie", "crm", &LOC)),
                format!("products[0].session.cookie (line 4): `{bad}` is not a valid cookie name")
            );
        }
    }

    #[test]
    fn dates_are_days_or_rfc3339() {
        assert_eq!(
            date_ms("1970-01-02", "k", "gold", &LOC).unwrap(),
            86_400_000
        );
        assert_eq!(
            date_ms("1970-01-01T00:00:01Z", "k", "gold", &LOC).unwrap(),
            1000
        );
        let e = err(date_ms(
            "2024-13-01",
            "products[0].pools[0].grants[0].expires",
            "gold",
            &LOC,
        ));
        assert!(
            e.starts_with(
                "products[0].pools[0].grants[0].expires (line 13): `2024-13-01` is not a date \
                 (YYYY-MM-DD or RFC 3339): "
            ),
            "{e}"
        );
    }

    #[test]
    fn durations_must_be_above_zero() {
        let k = "products[0].session.idle_timeout";
        assert_eq!(
            nonzero(Duration::from_secs(1), k, "crm", &LOC).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            err(nonzero(Duration::ZERO, k, "crm", &LOC)),
            "products[0].session.idle_timeout (line 5): must be above zero"
        );
    }
}
