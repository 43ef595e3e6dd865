//! `products[].clients`: the kinds of client (browser, API, monitoring …), each with its
//! match, mode and `on_full`; kinds are unique and the one default kind comes last.

use super::fields;
use super::locate::Locator;
use crate::config::file;
use crate::config::on_full;
use crate::config::{Client, ConfigError, Matcher};
use std::collections::HashSet;

pub fn clients(
    files: &[file::ClientFile],
    k: &dyn Fn(&str) -> String,
    loc: &Locator,
) -> Result<Vec<Client>, ConfigError> {
    let mut clients = Vec::new();
    let mut kinds = HashSet::new();
    let mut default_at: Option<usize> = None;
    for (ci, c) in files.iter().enumerate() {
        let ck = k(&format!("clients[{ci}]"));
        if !kinds.insert(c.kind.clone()) {
            return Err(loc.invalid(
                &format!("{ck}.kind"),
                Some(&c.kind),
                "duplicate client kind",
            ));
        }
        let matcher = match &c.matcher {
            None => Matcher::default(),
            Some(m) => Matcher {
                path_prefix: m
                    .path_prefix
                    .as_deref()
                    .map(|x| fields::path(x, &format!("{ck}.match.path_prefix"), &c.kind, loc))
                    .transpose()?,
                header: m
                    .header
                    .as_ref()
                    .map(|h| fields::header_match(h, &format!("{ck}.match.header"), &c.kind, loc))
                    .transpose()?,
                user_agent: m.user_agent.clone(),
                method: m
                    .method
                    .as_deref()
                    .map(|x| fields::method(x, &format!("{ck}.match.method"), &c.kind, loc))
                    .transpose()?,
            },
        };
        if matcher.is_default() {
            if let Some(first) = default_at {
                return Err(loc.invalid(
                    &format!("{ck}.match"),
                    Some(&c.kind),
                    &format!("a second default client (clients[{first}] already has no match)"),
                ));
            }
            default_at = Some(ci);
        } else if default_at.is_some() {
            return Err(loc.invalid(
                &format!("{ck}.match"),
                Some(&c.kind),
                "comes after the default client and could never match",
            ));
        }
        let on_full = on_full::on_full(c.on_full.as_ref())
            .map_err(|e| loc.invalid(&format!("{ck}.on_full"), Some(&c.kind), &e))?;
        clients.push(Client {
            kind: c.kind.clone(),
            matcher,
            mode: c.mode,
            on_full,
            builtin_page: c
                .on_full
                .as_ref()
                .is_none_or(|o| o.body.is_none() && o.content_type.is_none()),
        });
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{product, BASE};
    use crate::config::{Client, Mode};
    use http::Method;

    /// The product with `clients:` on line 10 and `entries` below it.
    fn clients(entries: &str) -> Result<Vec<Client>, String> {
        product(&format!("{BASE}    clients:\n{entries}")).map(|c| c.products[0].clients.clone())
    }

    #[test]
    fn kinds_with_matches_modes_and_answers() {
        let c = clients(
            "      - { kind: api, match: { path_prefix: /api, method: post, header: { name: Accept, contains: json } }, mode: check, on_full: { status: 429, body: busy } }
      - { kind: bot, match: { user_agent: Monitor }, mode: exempt, on_full: { status: 403, page: web-denied } }
      - { kind: web }",
        )
        .unwrap();
        assert_eq!(c[0].matcher.path_prefix.as_deref(), Some("/api"));
        assert_eq!(c[0].matcher.method, Some(Method::POST));
        assert!(c[0].matcher.header.is_some());
        assert_eq!(
            (c[0].mode, c[0].on_full.status.as_u16(), c[0].builtin_page),
            (Mode::Check, 429, false)
        );
        assert_eq!(c[1].matcher.user_agent.as_deref(), Some("Monitor"));
        // A configured status over the built-in page is still the page (counts, offer).
        assert_eq!(
            (c[1].mode, c[1].on_full.status.as_u16(), c[1].builtin_page),
            (Mode::Exempt, 403, true)
        );
        assert!(c[2].matcher.is_default());
        assert_eq!((c[2].mode, c[2].builtin_page), (Mode::Hold, true));
        assert_eq!(c[2].on_full, crate::config::OnFull::builtin());
    }

    #[test]
    fn client_errors_name_the_key_and_line() {
        let err = |entries: &str| clients(entries).unwrap_err();
        assert_eq!(
            err("      - { kind: web }\n      - { kind: web, match: { path_prefix: /m } }"),
            "products[0].clients[1].kind (line 11): duplicate client kind"
        );
        assert_eq!(
            err("      - { kind: web }\n      - { kind: app }"),
            "products[0].clients[1].match (line 12): a second default client (clients[0] already \
             has no match)"
        );
        assert_eq!(
            err("      - { kind: web }\n      - { kind: api, match: { path_prefix: /api } }"),
            "products[0].clients[1].match (line 12): comes after the default client and could \
             never match"
        );
        assert_eq!(
            err("      - { kind: api, match: { path_prefix: api } }"),
            "products[0].clients[0].match.path_prefix (line 11): `api` must be a path starting \
             with /"
        );
        assert_eq!(
            err("      - { kind: api, match: { method: FETCH } }"),
            "products[0].clients[0].match.method (line 11): unknown HTTP method `FETCH`"
        );
        assert_eq!(
            err("      - { kind: api, match: { header: { name: A, value: b, contains: c } } }"),
            "products[0].clients[0].match.header (line 11): give `value` or `contains`, not both"
        );
        assert_eq!(
            err("      - { kind: api, on_full: { status: 200 } }"),
            "products[0].clients[0].on_full (line 11): status 200 must be a 4xx or 5xx code"
        );
        assert!(err("      - { kind: api, mode: hld }").contains("unknown variant `hld`"));
    }
}
