//! The gateway's edge: `listen` (addresses, TLS certificates, redirects), `access_log` and
//! `timeouts`.

use super::locate::Locator;
use crate::config::file;
use crate::config::tls::{self, Part, TlsCert};
use crate::config::{AccessLogTarget, ConfigError, Listener, Timeouts};
use std::time::Duration;

pub fn listeners(f: &file::ListenFile, loc: &Locator) -> Result<Vec<Listener>, ConfigError> {
    let many = f.0.len() > 1;
    let key = |i: usize| {
        if many {
            format!("listen[{i}]")
        } else {
            "listen".to_string()
        }
    };
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in f.0.iter().enumerate() {
        let addr = l.address.0.as_str();
        if out.iter().any(|o| o.address == addr) {
            return Err(loc.invalid(
                &format!("{}.address", key(i)),
                Some(addr),
                &format!("`{addr}` is listed twice"),
            ));
        }
        if l.redirect_https && l.tls.is_some() {
            return Err(loc.invalid(
                &format!("{}.redirect_https", key(i)),
                Some(addr),
                "a TLS listener cannot redirect to itself; use it on a plain listener",
            ));
        }
        let tls = l
            .tls
            .as_ref()
            .map(|t| cert_pair(t, &format!("{}.tls", key(i)), Some(addr), loc))
            .transpose()?;
        out.push(Listener {
            address: addr.to_string(),
            tls,
            redirect_https: l.redirect_https,
        });
    }
    if let Some(i) = out.iter().position(|l| l.redirect_https) {
        if !out.iter().any(|l| l.tls.is_some()) {
            return Err(loc.invalid(
                &format!("{}.redirect_https", key(i)),
                Some(&out[i].address),
                "needs a TLS listener to redirect to",
            ));
        }
    }
    Ok(out)
}

pub fn cert_pair(
    t: &file::TlsFile,
    key: &str,
    entity: Option<&str>,
    loc: &Locator,
) -> Result<TlsCert, ConfigError> {
    tls::load_cert(&t.cert, &t.key).map_err(|(part, e)| {
        let (k, name) = match part {
            Part::Cert => (format!("{key}.cert"), t.cert.display().to_string()),
            Part::Key => (format!("{key}.key"), t.key.display().to_string()),
        };
        // The file name is on the key's own line; the entity only narrows the search.
        let line = loc.line_of(&name).or_else(|| loc.line(&k, entity));
        ConfigError::Invalid {
            key: k,
            line,
            reason: e,
        }
    })
}

pub fn access_log(
    a: Option<file::AccessLogFile>,
    loc: &Locator,
) -> Result<Option<AccessLogTarget>, ConfigError> {
    let Some(a) = a else { return Ok(None) };
    match (a.path, a.stdout) {
        (Some(p), false) => Ok(Some(AccessLogTarget::File(p))),
        (None, true) => Ok(Some(AccessLogTarget::Stdout)),
        _ => Err(loc.invalid(
            "access_log",
            None,
            "give exactly one of `path` or `stdout: true`",
        )),
    }
}

pub fn timeouts(t: Option<&file::TimeoutsFile>, loc: &Locator) -> Result<Timeouts, ConfigError> {
    let d = Timeouts::default();
    let pick = |v: Option<Duration>, def: Duration| v.unwrap_or(def);
    let t = Timeouts {
        header: pick(t.and_then(|t| t.header.as_ref()).map(|x| x.0), d.header),
        body: pick(t.and_then(|t| t.body.as_ref()).map(|x| x.0), d.body),
        idle: pick(t.and_then(|t| t.idle.as_ref()).map(|x| x.0), d.idle),
    };
    for (k, v) in [("header", t.header), ("body", t.body), ("idle", t.idle)] {
        if v < Duration::from_millis(100) || v > Duration::from_secs(3600) {
            return Err(loc.invalid(
                &format!("timeouts.{k}"),
                None,
                "must be between 100ms and 1h",
            ));
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;
    use super::*;

    #[test]
    fn listen_is_a_string_or_a_list() {
        let c = cfg("127.0.0.1:8080", "app:80", "").unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].shape(), ("127.0.0.1:8080", false, false));
        let c = cfg("[\"127.0.0.1:8080\", \"[::1]:8081\"]", "app:80", "").unwrap();
        let shapes: Vec<_> = c.listen.iter().map(|l| l.shape()).collect();
        assert_eq!(
            shapes,
            [
                ("127.0.0.1:8080", false, false),
                ("[::1]:8081", false, false)
            ]
        );
        assert!(c.access_log.is_none());
        assert!(c.products[0].upstream_tls.is_none());
    }

    #[test]
    fn threads_and_work_stealing() {
        let c = cfg("127.0.0.1:8080", "app:80", "").unwrap();
        assert_eq!((c.threads, c.work_stealing), (0, false));
        let c = cfg(
            "127.0.0.1:8080",
            "app:80",
            "threads: 2\nwork_stealing: true\n",
        )
        .unwrap();
        assert_eq!((c.threads, c.work_stealing), (2, true));
        let e = cfg("127.0.0.1:8080", "app:80", "work_stealing: sometimes\n").unwrap_err();
        assert!(e.contains("work_stealing"), "{e}");
    }

    #[test]
    fn listener_and_access_log_errors() {
        let e = cfg("[127.0.0.1:8080, 127.0.0.1:8080]", "app:80", "").unwrap_err();
        assert!(
            e.contains("listen[1].address") && e.contains("listed twice"),
            "{e}"
        );
        let e = cfg("[127.0.0.1:9090]", "app:80", "").unwrap_err();
        assert!(
            e.contains("admin.listen") && e.contains("must differ"),
            "{e}"
        );
        let e = cfg("[]", "app:80", "").unwrap_err();
        assert!(e.contains("at least one listener"), "{e}");
        let e = cfg("127.0.0.1:x", "app:80", "").unwrap_err();
        assert!(e.contains("invalid port") && e.contains("line 1"), "{e}");
        let e = cfg(
            "127.0.0.1:8080",
            "app:80",
            "access_log: { path: a.log, stdout: true }\n",
        )
        .unwrap_err();
        assert!(e.contains("access_log (line 4): give exactly one"), "{e}");
        let c = cfg("127.0.0.1:8080", "app:80", "access_log: { stdout: true }\n").unwrap();
        assert_eq!(c.access_log, Some(AccessLogTarget::Stdout));
    }

    #[test]
    fn redirects_need_a_tls_listener_other_than_themselves() {
        let e = cfg(
            "[{ address: \"127.0.0.1:8080\", redirect_https: true }]",
            "app:80",
            "",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "listen.redirect_https (line 1): needs a TLS listener to redirect to"
        );
        let e = cfg(
            "[{ address: \"127.0.0.1:8443\", tls: { cert: c.pem, key: k.pem }, redirect_https: true }]",
            "app:80",
            "",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "listen.redirect_https (line 1): a TLS listener cannot redirect to itself; use it on \
             a plain listener"
        );
    }

    #[test]
    fn an_unreadable_certificate_is_named_on_its_line() {
        let e = cfg(
            "\n  - 127.0.0.1:8080\n  - { address: \"127.0.0.1:8443\", tls: { cert: /nonexistent/c.pem, key: /nonexistent/k.pem } }",
            "app:80",
            "",
        )
        .unwrap_err();
        assert!(e.starts_with("listen[1].tls.cert (line 3): "), "{e}");
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn timeouts_default_and_stay_within_bounds() {
        let c = cfg("127.0.0.1:8080", "app:80", "").unwrap();
        assert_eq!(c.timeouts, Timeouts::default());
        let c = cfg(
            "127.0.0.1:8080",
            "app:80",
            "timeouts: { header: 5s, idle: 2m }\n",
        )
        .unwrap();
        assert_eq!(
            c.timeouts,
            Timeouts {
                header: Duration::from_secs(5),
                body: Duration::from_secs(30),
                idle: Duration::from_secs(120)
            }
        );
        let e = cfg("127.0.0.1:8080", "app:80", "timeouts: { header: 50ms }\n").unwrap_err();
        assert_eq!(e, "timeouts.header (line 4): must be between 100ms and 1h");
        let e = cfg("127.0.0.1:8080", "app:80", "timeouts:\n  body: 2h\n").unwrap_err();
        assert_eq!(e, "timeouts.body (line 5): must be between 100ms and 1h");
    }

    #[test]
    fn access_log_is_a_path_or_stdout() {
        let c = cfg("127.0.0.1:8080", "app:80", "access_log: { path: a.log }\n").unwrap();
        assert_eq!(c.access_log, Some(AccessLogTarget::File("a.log".into())));
        let e = cfg("127.0.0.1:8080", "app:80", "access_log: {}\n").unwrap_err();
        assert_eq!(
            e,
            "access_log (line 4): give exactly one of `path` or `stdout: true`"
        );
    }
}
