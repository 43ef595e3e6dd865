//! `products[].session`: the session and device cookies, the timeouts, and the idle rules
//! (`activity.ignore`, `idle_by`, `idle_warning`), which are checked against the product's
//! login, logout and heartbeat paths.

use super::fields;
use super::locate::Locator;
use crate::config::file;
use crate::config::paths;
use crate::config::{
    ConfigError, IdleBy, IgnoreRule, LoginRule, LogoutRule, Matcher, SessionPolicy,
};
use std::time::Duration;

/// The product's paths that are never ordinary requests, so no ignore entry may cover them.
pub struct Fixed<'a> {
    pub path_prefix: &'a str,
    pub login: &'a LoginRule,
    pub logout: Option<&'a LogoutRule>,
}

/// The session's cookies and timeouts (the idle rules come after login and logout are known).
pub fn session(
    s: &file::SessionFile,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<SessionPolicy, ConfigError> {
    let session = SessionPolicy {
        cookie: fields::cookie_name(&s.cookie, &k("session.cookie"), ctx, loc)?,
        idle_timeout: fields::nonzero(s.idle_timeout.0, &k("session.idle_timeout"), ctx, loc)?,
        max_lifetime: fields::nonzero(s.max_lifetime.0, &k("session.max_lifetime"), ctx, loc)?,
        presence_timeout: s.presence_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        expired: s.expired,
        device_cookie: fields::cookie_name(
            s.device_cookie.as_deref().unwrap_or("seatgate_device"),
            &k("session.device_cookie"),
            ctx,
            loc,
        )?,
        standby_timeout: s.standby_timeout.map_or(Duration::from_secs(60), |d| d.0),
        cookie_path: s.cookie_path.clone().unwrap_or_else(|| "/".into()),
        ignore: Vec::new(),
        idle_by: s.idle_by,
        idle_warning: None,
    };
    if session.device_cookie == session.cookie {
        return Err(loc.invalid(
            &k("session.device_cookie"),
            Some(ctx),
            "must differ from session.cookie",
        ));
    }
    if let Some(pt) = session.presence_timeout {
        if pt < Duration::from_secs(3) {
            return Err(loc.invalid(
                &k("session.presence_timeout"),
                Some(ctx),
                "must be at least 3s (or 0 to disable)",
            ));
        }
    }
    Ok(session)
}

/// `session.activity`, `idle_by` and `idle_warning`, checked against the rest of the product:
/// an ignore entry may not cover the login, logout or heartbeat path (those are never ordinary
/// requests), nor match every request; `input` and the warning need the heartbeat.
pub fn idle_rules(
    session: &mut SessionPolicy,
    s: &file::SessionFile,
    fixed: &Fixed<'_>,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<(), ConfigError> {
    let (login, logout) = (fixed.login, fixed.logout);
    let heartbeat = paths::heartbeat_url(fixed.path_prefix);
    let entries = s.activity.as_ref().map_or(&[][..], |a| a.ignore.as_slice());
    for (j, e) in entries.iter().enumerate() {
        let ek = k(&format!("session.activity.ignore[{j}]"));
        let matcher = Matcher {
            path_prefix: e
                .path_prefix
                .as_deref()
                .map(|x| fields::path(x, &format!("{ek}.path_prefix"), ctx, loc))
                .transpose()?,
            header: e
                .header
                .as_ref()
                .map(|h| fields::header_match(h, &format!("{ek}.header"), ctx, loc))
                .transpose()?,
            user_agent: e.user_agent.clone(),
            method: e
                .method
                .as_deref()
                .map(|x| fields::method(x, &format!("{ek}.method"), ctx, loc))
                .transpose()?,
        };
        let mut content_type = Vec::new();
        for t in e.content_type.iter().flat_map(|l| l.0.iter()) {
            let t = t.trim().to_ascii_lowercase();
            if t.is_empty() || t.contains(char::is_whitespace) {
                return Err(loc.invalid(
                    &format!("{ek}.content_type"),
                    Some(ctx),
                    "must be media types or prefixes such as `image/` or `text/css`",
                ));
            }
            content_type.push(t);
        }
        let rule = IgnoreRule {
            matcher,
            content_type,
        };
        let conditional = rule.matcher.header.is_some()
            || rule.matcher.user_agent.is_some()
            || !rule.content_type.is_empty();
        if rule.matcher.path_prefix.is_none() && !conditional {
            return Err(loc.invalid(
                &ek,
                Some(ctx),
                "matches every request (login, logout and heartbeat included): give a \
                 path_prefix, header, user_agent or content_type",
            ));
        }
        if let Some(pp) = &rule.matcher.path_prefix {
            let covers = |target: &str| paths::prefix_matches(pp, target);
            let mut hits = vec![("login.path", login.path.as_str())];
            if let Some(l) = logout {
                hits.push(("logout.path", l.path.as_str()));
            }
            hits.push(("the heartbeat", heartbeat.as_str()));
            if let Some((what, target)) = hits.into_iter().find(|(_, t)| covers(t)) {
                // The entry's own line: its value below the product's `ignore:`, not the
                // first `path_prefix:` of the product.
                let line = loc.line_below(ctx, "ignore:", pp);
                return Err(ConfigError::Invalid {
                    key: format!("{ek}.path_prefix"),
                    line: line.or_else(|| loc.line(&format!("{ek}.path_prefix"), Some(ctx))),
                    reason: format!("`{pp}` would match {what} `{target}`, which is never ignored"),
                });
            }
        }
        session.ignore.push(rule);
    }
    if session.idle_by == IdleBy::Input && session.presence_timeout.is_none() {
        return Err(loc.invalid(
            &k("session.idle_by"),
            Some(ctx),
            "`input` needs session.presence_timeout: the heartbeat reports the input",
        ));
    }
    if let Some(w) = &s.idle_warning {
        let w = fields::nonzero(w.0, &k("session.idle_warning"), ctx, loc)?;
        let Some(pt) = session.presence_timeout else {
            return Err(loc.invalid(
                &k("session.idle_warning"),
                Some(ctx),
                "needs session.presence_timeout: the heartbeat shows the warning",
            ));
        };
        let beat = Duration::from_millis(paths::beat_period(Some(pt)));
        if w >= session.idle_timeout || w < beat {
            return Err(loc.invalid(
                &k("session.idle_warning"),
                Some(ctx),
                &format!(
                    "must be shorter than idle_timeout and at least one heartbeat ({}s)",
                    beat.as_secs()
                ),
            ));
        }
        session.idle_warning = Some(w);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::Method;

    fn idle_cfg(session_extra: &str) -> Result<Config, String> {
        let yaml = format!(
            "listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090 }}
store: {{ kind: embedded }}
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
{session_extra}
    login: {{ path: /app/login }}
    logout: {{ path: /app/logout }}
    seats: 1
"
        );
        crate::config::parse(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn idle_rules_are_read_and_default_to_requests() {
        let c = idle_cfg("").unwrap();
        let s = &c.products[0].session;
        assert_eq!(
            (s.idle_by, s.idle_warning, s.ignore.len()),
            (IdleBy::Requests, None, 0)
        );
        let c = idle_cfg(
            "      presence_timeout: 90s
      idle_by: input
      idle_warning: 2m
      activity:
        ignore:
          - { path_prefix: /app/api/poll }
          - { header: { name: X-Requested-With, value: XMLHttpRequest } }
          - { content_type: [Image/, text/css] }
          - { path_prefix: /static, method: GET, content_type: application/javascript }",
        )
        .unwrap();
        let s = &c.products[0].session;
        assert_eq!(s.idle_by, IdleBy::Input);
        assert_eq!(s.idle_warning, Some(Duration::from_secs(120)));
        assert_eq!(s.ignore.len(), 4);
        assert_eq!(
            s.ignore[0].matcher.path_prefix.as_deref(),
            Some("/app/api/poll")
        );
        assert_eq!(s.ignore[2].content_type, vec!["image/", "text/css"]);
        assert_eq!(s.ignore[3].matcher.method, Some(Method::GET));
    }

    #[test]
    fn idle_rule_errors_name_the_key_and_line() {
        let ignore = |entry: &str| {
            idle_cfg(&format!(
                "      activity:\n        ignore:\n          - {entry}"
            ))
            .unwrap_err()
        };
        assert_eq!(
            ignore("{ path_prefix: /app }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/app` would match \
             login.path `/app/login`, which is never ignored"
        );
        assert_eq!(
            ignore("{ path_prefix: /app/logout }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/app/logout` would \
             match logout.path `/app/logout`, which is never ignored"
        );
        assert_eq!(
            ignore("{ path_prefix: /.seatgate }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/.seatgate` would \
             match the heartbeat `/.seatgate/heartbeat`, which is never ignored"
        );
        assert!(
            ignore("{ method: GET }").starts_with(
                "products[0].session.activity.ignore[0] (line 12): matches every request"
            ),
            "{}",
            ignore("{ method: GET }")
        );
        assert!(ignore("{ path_prefix: /x, colour: red }").contains("unknown field `colour`"));
        assert!(ignore("{ content_type: \"image/ png\" }").contains("content_type"));
        assert_eq!(
            idle_cfg("      idle_by: input").unwrap_err(),
            "products[0].session.idle_by (line 11): `input` needs session.presence_timeout: \
             the heartbeat reports the input"
        );
        assert!(idle_cfg("      idle_by: inputs")
            .unwrap_err()
            .contains("unknown variant `inputs`"));
        assert_eq!(
            idle_cfg("      idle_warning: 2m").unwrap_err(),
            "products[0].session.idle_warning (line 11): needs session.presence_timeout: the \
             heartbeat shows the warning"
        );
        assert_eq!(
            idle_cfg("      presence_timeout: 90s\n      idle_warning: 20m").unwrap_err(),
            "products[0].session.idle_warning (line 12): must be shorter than idle_timeout and \
             at least one heartbeat (30s)"
        );
    }

    use super::super::testing::{base_with, product, BASE};
    use crate::config::Expired;

    fn session_line(keys: &str) -> String {
        base_with(
            "session",
            &format!("    session: {{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h{keys} }}"),
        )
    }

    #[test]
    fn session_keys_and_their_defaults() {
        let c = product(BASE).unwrap();
        let s = &c.products[0].session;
        assert_eq!(
            (s.cookie.as_str(), s.device_cookie.as_str()),
            ("SID", "seatgate_device")
        );
        assert_eq!(
            (s.idle_timeout, s.max_lifetime, s.standby_timeout),
            (
                Duration::from_secs(1200),
                Duration::from_secs(12 * 3600),
                Duration::from_secs(60)
            )
        );
        assert_eq!(
            (s.presence_timeout, s.expired, s.cookie_path.as_str()),
            (None, Expired::Login, "/")
        );
        let c = product(&session_line(
            ", presence_timeout: 90s, device_cookie: DEV, standby_timeout: 2m, cookie_path: /app, expired: adopt",
        ))
        .unwrap();
        let s = &c.products[0].session;
        assert_eq!(s.presence_timeout, Some(Duration::from_secs(90)));
        assert_eq!(
            (s.device_cookie.as_str(), s.cookie_path.as_str()),
            ("DEV", "/app")
        );
        assert_eq!(
            (s.standby_timeout, s.expired),
            (Duration::from_secs(120), Expired::Adopt)
        );
        // 0 turns presence off.
        let c = product(&session_line(", presence_timeout: 0s")).unwrap();
        assert_eq!(c.products[0].session.presence_timeout, None);
    }

    #[test]
    fn session_errors_name_the_key_and_line() {
        let err = |keys: &str| {
            product(&base_with("session", &format!("    session: {keys}"))).unwrap_err()
        };
        assert_eq!(
            err("{ cookie: \"S;D\", idle_timeout: 20m, max_lifetime: 12h }"),
            "products[0].session.cookie (line 7): `S;D` is not a valid cookie name"
        );
        assert_eq!(
            err("{ cookie: SID, idle_timeout: 0s, max_lifetime: 12h }"),
            "products[0].session.idle_timeout (line 7): must be above zero"
        );
        assert_eq!(
            err("{ cookie: SID, idle_timeout: 20m, max_lifetime: 0s }"),
            "products[0].session.max_lifetime (line 7): must be above zero"
        );
        assert_eq!(
            err("{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h, device_cookie: SID }"),
            "products[0].session.device_cookie (line 7): must differ from session.cookie"
        );
        assert_eq!(
            err("{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h, presence_timeout: 2s }"),
            "products[0].session.presence_timeout (line 7): must be at least 3s (or 0 to disable)"
        );
        assert!(err("{ cookie: SID, idle_timeout: 20m }").contains("missing field `max_lifetime`"));
    }
}
