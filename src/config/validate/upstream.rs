//! `products[].upstream`: the app's address and, with `tls: true`, the name its certificate
//! is verified against and the CAs trusted for it.

use super::locate::Locator;
use crate::config::file;
use crate::config::tls;
use crate::config::{ConfigError, UpstreamTls};

pub fn upstream_tls(
    u: &file::UpstreamFile,
    key: &str,
    ctx: &str,
    loc: &Locator,
) -> Result<Option<UpstreamTls>, ConfigError> {
    if !u.tls {
        for (set, k) in [(u.sni.is_some(), "sni"), (u.ca.is_some(), "ca")] {
            if set {
                return Err(loc.invalid(
                    &format!("{key}.{k}"),
                    Some(ctx),
                    "only used with `tls: true`",
                ));
            }
        }
        return Ok(None);
    }
    let host = u
        .address
        .0
        .rsplit_once(':')
        .map_or("", |(h, _)| h)
        .trim_matches(['[', ']']);
    let sni = match &u.sni {
        Some(s) => s.clone(),
        None if host.parse::<std::net::IpAddr>().is_err() => host.to_string(),
        None => {
            // No `sni:` in the file: point at the `upstream:` line.
            return Err(ConfigError::Invalid {
                key: format!("{key}.sni"),
                line: loc.line(key, Some(ctx)),
                reason: format!(
                    "TLS to the IP address `{host}` needs `sni`: the name the app's certificate \
                     is verified against"
                ),
            });
        }
    };
    if sni.is_empty() || rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
        return Err(loc.invalid(
            &format!("{key}.sni"),
            Some(ctx),
            &format!("`{sni}` is not a host name"),
        ));
    }
    let ca =
        u.ca.as_ref()
            .map(|p| tls::load_ca(p).map_err(|e| loc.invalid(&format!("{key}.ca"), Some(ctx), &e)))
            .transpose()?;
    let ca_group = ca.as_ref().map_or(0, |c| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for cert in c.iter() {
            cert.borrow_raw_cert().hash(&mut h);
        }
        h.finish()
    });
    Ok(Some(UpstreamTls { sni, ca, ca_group }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::cfg;

    #[test]
    fn upstream_tls_takes_its_name_from_the_host() {
        let c = cfg(
            "127.0.0.1:8080",
            "{ address: \"crm.internal:443\", tls: true }",
            "",
        )
        .unwrap();
        let t = c.products[0].upstream_tls.as_ref().unwrap();
        assert_eq!(t.sni, "crm.internal");
        assert!(t.ca.is_none());
        assert_eq!(c.products[0].upstream, "crm.internal:443");
        let c = cfg(
            "127.0.0.1:8080",
            "{ address: \"10.1.2.3:443\", tls: true, sni: crm.example.com }",
            "",
        )
        .unwrap();
        assert_eq!(
            c.products[0].upstream_tls.as_ref().unwrap().sni,
            "crm.example.com"
        );
        let e = cfg(
            "127.0.0.1:8080",
            "{ address: \"app:443\", tls: true, sni: \"a b\" }",
            "",
        )
        .unwrap_err();
        assert!(
            e.contains("products[0].upstream.sni") && e.contains("not a host name"),
            "{e}"
        );
        let e = cfg("127.0.0.1:8080", "{ address: \"app\", tls: true }", "").unwrap_err();
        assert!(e.contains("must be host:port"), "{e}");
    }

    #[test]
    fn upstream_tls_errors_name_the_key_and_line() {
        let e = cfg("127.0.0.1:8080", "{ address: \"app:80\", sni: app }", "").unwrap_err();
        assert_eq!(
            e,
            "products[0].upstream.sni (line 6): only used with `tls: true`"
        );
        let e = cfg("127.0.0.1:8080", "{ address: \"app:80\", ca: ca.pem }", "").unwrap_err();
        assert_eq!(
            e,
            "products[0].upstream.ca (line 6): only used with `tls: true`"
        );
        let e = cfg(
            "127.0.0.1:8080",
            "{ address: \"10.1.2.3:443\", tls: true }",
            "",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "products[0].upstream.sni (line 6): TLS to the IP address `10.1.2.3` needs `sni`: \
             the name the app's certificate is verified against"
        );
        let e = cfg(
            "127.0.0.1:8080",
            "{ address: \"app:443\", tls: true, ca: /nonexistent/ca.pem }",
            "",
        )
        .unwrap_err();
        assert!(e.starts_with("products[0].upstream.ca (line 6): "), "{e}");
    }
}
