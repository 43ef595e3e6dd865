//! One `products[]` entry: its name and routing, then each section by its own validator
//! (session, login, pools and groups, clients, upstream), then the limits; and the check
//! across products that no two route alike.

use super::locate::Locator;
use super::{clients, fields, login, pools, session, upstream};
use crate::config::file;
use crate::config::{ConfigError, OnFull, Product, SelfServicePolicy, StoreErrorPolicy};
use crate::domain::PoolKey;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_MAX_LOGIN_BODY: usize = 16 * 1024;
/// pingora's retry buffer holds 64 KiB; a larger login body could not be replayed upstream.
const MAX_LOGIN_BODY_LIMIT: usize = 64 * 1024;
const DEFAULT_HOLD: Duration = Duration::from_secs(60);
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(120);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub fn product(i: usize, p: file::ProductFile, loc: &Locator) -> Result<Product, ConfigError> {
    let k = |s: &str| format!("products[{i}].{s}");
    let ctx = p.name.as_str();
    name(&p.name, &k, loc)?;
    let path_prefix = fields::path(
        p.path_prefix.as_deref().unwrap_or("/"),
        &k("path_prefix"),
        ctx,
        loc,
    )?;
    let mut session = session::session(&p.session, &k, ctx, loc)?;
    let login = login::login(&p.login, p.seats_per, &k, ctx, loc)?;
    let logout = login::logout(p.logout.as_ref(), &k, ctx, loc)?;
    session::idle_rules(
        &mut session,
        &p.session,
        &session::Fixed {
            path_prefix: &path_prefix,
            login: &login,
            logout: logout.as_ref(),
        },
        &k,
        ctx,
        loc,
    )?;
    let pools = pools::pools(&p, i, loc)?;
    let groups = pools::groups(&p.groups, &pools, &k, ctx, loc)?;
    let clients = clients::clients(&p.clients, &k, loc)?;
    let max_login_body = max_login_body(p.max_login_body, &k, ctx, loc)?;
    let self_service = self_service(p.self_service.as_ref(), &k, ctx, loc)?;
    let upstream_tls = upstream::upstream_tls(&p.upstream, &k("upstream"), ctx, loc)?;
    let hosts = p.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let pool_keys = pools
        .iter()
        .map(|x| PoolKey::new(&p.name, &x.name))
        .collect();
    Ok(Product {
        name: p.name.clone(),
        upstream: p.upstream.address.0.clone(),
        upstream_tls,
        hosts,
        path_prefix,
        session,
        login,
        logout,
        seats_per: p.seats_per,
        pools,
        pool_keys,
        exempt_users: p.exempt_users.iter().cloned().collect(),
        named_users: p.named_users.iter().cloned().collect(),
        max_sessions: p.max_sessions.map(|n| n.get()),
        groups,
        clients,
        on_store_error: p.on_store_error.unwrap_or(StoreErrorPolicy::FailClosed),
        max_login_body,
        default_denial: OnFull::builtin(),
        self_service,
    })
}

/// The name keys the store and the metrics: one word.
fn name(name: &str, k: &dyn Fn(&str) -> String, loc: &Locator) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ':')
    {
        return Err(loc.invalid(
            &k("name"),
            Some(name),
            "must be a word without spaces, braces or colons",
        ));
    }
    Ok(())
}

fn max_login_body(
    n: Option<usize>,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<usize, ConfigError> {
    let n = n.unwrap_or(DEFAULT_MAX_LOGIN_BODY);
    if n == 0 || n > MAX_LOGIN_BODY_LIMIT {
        return Err(loc.invalid(
            &k("max_login_body"),
            Some(ctx),
            "must be between 1 and 65536 bytes",
        ));
    }
    Ok(n)
}

fn self_service(
    s: Option<&file::SelfServiceFile>,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<SelfServicePolicy, ConfigError> {
    let policy = SelfServicePolicy {
        enabled: s.and_then(|x| x.enabled).unwrap_or(true),
        token_ttl: s
            .and_then(|x| x.token_ttl.as_ref())
            .map_or(DEFAULT_TOKEN_TTL, |d| d.0),
        hold: s
            .and_then(|x| x.hold.as_ref())
            .map_or(DEFAULT_HOLD, |d| d.0),
    };
    for (key, v) in [("token_ttl", policy.token_ttl), ("hold", policy.hold)] {
        if v < Duration::from_secs(1) || v > MAX_TOKEN_TTL {
            return Err(loc.invalid(
                &k(&format!("self_service.{key}")),
                Some(ctx),
                "must be between 1s and 1h",
            ));
        }
    }
    Ok(policy)
}

/// No two products may take the same requests: same path_prefix with overlapping hosts
/// (both naming hosts, or both accepting any).
pub fn routes(products: &[Arc<Product>], loc: &Locator) -> Result<(), ConfigError> {
    for (i, a) in products.iter().enumerate() {
        for b in &products[..i] {
            let hosts_overlap = a.hosts.is_empty()
                || b.hosts.is_empty()
                || a.hosts.iter().any(|h| b.hosts.contains(h));
            if hosts_overlap
                && a.path_prefix == b.path_prefix
                && (a.hosts.is_empty() == b.hosts.is_empty())
            {
                return Err(loc.invalid(
                    &format!("products[{i}].path_prefix"),
                    Some(&a.name),
                    &format!(
                        "routes exactly like product `{}` (same hosts and path_prefix)",
                        b.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base_with, parse, product as one, BASE};
    use super::*;
    use crate::config::Config;

    fn header() -> &'static str {
        "listen: 127.0.0.1:8080\nadmin: { listen: 127.0.0.1:9090 }\nstore: { kind: embedded }\n"
    }

    /// Products `crm` (from line 5) and `erp` (right after), each with BASE and its own
    /// extra keys.
    fn two(crm: &str, erp: &str) -> Result<Config, String> {
        parse(&format!(
            "{}products:\n  - name: crm\n{BASE}{crm}  - name: erp\n{BASE}{erp}",
            header()
        ))
    }

    #[test]
    fn a_product_and_its_defaults() {
        let c = one(&(BASE.to_string() + "    hosts: [CRM.Example.com]\n")).unwrap();
        let p = &c.products[0];
        assert_eq!(
            (p.name.as_str(), p.upstream.as_str(), p.path_prefix.as_str()),
            ("crm", "127.0.0.1:8000", "/")
        );
        assert_eq!(p.hosts, ["crm.example.com"]);
        assert_eq!(
            (p.max_login_body, p.on_store_error),
            (16 * 1024, StoreErrorPolicy::FailClosed)
        );
        assert_eq!(
            p.self_service,
            SelfServicePolicy {
                enabled: true,
                token_ttl: DEFAULT_TOKEN_TTL,
                hold: DEFAULT_HOLD
            }
        );
        assert_eq!(p.default_denial, OnFull::builtin());
        let c = one(&(BASE.to_string()
            + "    path_prefix: /crm\n    max_login_body: 65536\n    on_store_error: last_known\n    self_service: { enabled: false, token_ttl: 10m, hold: 30s }\n"))
        .unwrap();
        let p = &c.products[0];
        assert_eq!((p.path_prefix.as_str(), p.max_login_body), ("/crm", 65536));
        assert_eq!(p.on_store_error, StoreErrorPolicy::LastKnown);
        assert_eq!(
            p.self_service,
            SelfServicePolicy {
                enabled: false,
                token_ttl: Duration::from_secs(600),
                hold: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn product_errors_name_the_key_and_line() {
        let e = parse(&format!(
            "{}products:\n  - name: \"my crm\"\n{BASE}",
            header()
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "products[0].name (line 5): must be a word without spaces, braces or colons"
        );
        let err = |extra: &str| one(&(BASE.to_string() + extra)).unwrap_err();
        assert_eq!(
            err("    path_prefix: crm\n"),
            "products[0].path_prefix (line 10): `crm` must be a path starting with /"
        );
        for n in ["0", "65537"] {
            assert_eq!(
                err(&format!("    max_login_body: {n}\n")),
                "products[0].max_login_body (line 10): must be between 1 and 65536 bytes"
            );
        }
        assert_eq!(
            err("    self_service: { token_ttl: 2h }\n"),
            "products[0].self_service.token_ttl (line 10): must be between 1s and 1h"
        );
        assert_eq!(
            err("    self_service: { hold: 0s }\n"),
            "products[0].self_service.hold (line 10): must be between 1s and 1h"
        );
        assert!(one(&base_with("upstream", "    upstream: app"))
            .unwrap_err()
            .contains("host:port"));
    }

    #[test]
    fn products_are_named_once_and_route_apart() {
        let c = two(
            "    hosts: [crm.example.com]\n",
            "    hosts: [erp.example.com]\n",
        )
        .unwrap();
        assert_eq!(c.products.len(), 2);
        two("", "    path_prefix: /erp\n").unwrap();
        // Any host and a named host do not take the same requests: the named one wins.
        two("", "    hosts: [erp.example.com]\n").unwrap();
        assert_eq!(
            two("", "").unwrap_err(),
            "products[1].path_prefix (line 10): routes exactly like product `crm` (same hosts and \
             path_prefix)"
        );
        assert_eq!(
            two(
                "    hosts: [a.example.com, b.example.com]\n",
                "    hosts: [b.example.com]\n"
            )
            .unwrap_err(),
            "products[1].path_prefix (line 11): routes exactly like product `crm` (same hosts and \
             path_prefix)"
        );
        let e = parse(&format!(
            "{}products:\n  - name: crm\n{BASE}  - name: crm\n{BASE}",
            header()
        ))
        .unwrap_err();
        assert_eq!(e, "products[1].name (line 5): duplicate product name");
        assert_eq!(
            parse(&format!("{}products: []\n", header())).unwrap_err(),
            "products (line 4): at least one product is required"
        );
    }
}
