//! From the file format to the runtime config: every cross-field rule (one default client,
//! known pool references, reserves within their pool …), one validator per section, each
//! error naming the dotted key and, where it can be found, the line ([`locate`]).
//!
//! `Config::from_file` only orders the sections; the rules live in the section's file:
//! [`listen`] (listeners, access log, timeouts), [`admin`], [`store`], [`product`] (which
//! calls [`session`], [`login`], [`pools`], [`clients`], [`upstream`]), and [`fields`] for
//! the single values they share.

mod admin;
mod clients;
mod fields;
mod listen;
mod locate;
mod login;
mod pools;
mod product;
mod queue;
mod session;
mod store;
mod upstream;

use super::file::FileConfig;
use super::{AuditConfig, Config, ConfigError};
use locate::Locator;
use std::collections::HashSet;
use std::sync::Arc;

impl Config {
    /// Validates `f`; `src` is the file text, used only to point errors at a line.
    pub fn from_file(f: FileConfig, src: &str) -> Result<Config, ConfigError> {
        let loc = Locator { src };
        let listen = listen::listeners(&f.listen, &loc)?;
        let access_log = listen::access_log(f.access_log, &loc)?;
        let admin = admin::admin(f.admin, &listen, &loc)?;
        let store = store::store(f.store, &loc)?;
        if f.products.is_empty() {
            return Err(loc.invalid("products", None, "at least one product is required"));
        }
        let mut products = Vec::new();
        let mut names = HashSet::new();
        for (i, p) in f.products.into_iter().enumerate() {
            if !names.insert(p.name.clone()) {
                return Err(loc.invalid(
                    &format!("products[{i}].name"),
                    Some(&p.name),
                    "duplicate product name",
                ));
            }
            products.push(Arc::new(product::product(i, p, &loc)?));
        }
        admin::user_products(&admin.users, &names, &loc)?;
        product::routes(&products, &loc)?;
        let timeouts = listen::timeouts(f.timeouts.as_ref(), &loc)?;
        Ok(Config {
            listen,
            admin,
            store,
            products,
            audit: f.audit.map(|a| AuditConfig {
                path: a.path,
                hash_users: a.hash_users,
            }),
            threads: f.threads.unwrap_or(0),
            work_stealing: f.work_stealing,
            access_log,
            trusted_proxies: f.trusted_proxies.iter().map(|c| c.0).collect(),
            timeouts,
        })
    }
}

/// Whole configs for the section tests: a section's rule often needs the rest of the product
/// around it, and its line is a line of the whole file.
#[cfg(test)]
mod testing {
    use crate::config::Config;

    pub fn parse(yaml: &str) -> Result<Config, String> {
        crate::config::parse(yaml).map_err(|e| e.to_string())
    }

    /// The products section with one product `crm` (six lines).
    pub const ONE_PRODUCT: &str = "products:
  - name: crm
    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    seats: 1
";

    /// `listen` and the product's `upstream` as given, `extra` top-level keys (from line 4)
    /// before the products.
    pub fn cfg(listen: &str, upstream: &str, extra: &str) -> Result<Config, String> {
        parse(&format!(
            "listen: {listen}\nadmin: {{ listen: 127.0.0.1:9090 }}\nstore: {{ kind: embedded }}\n{extra}{}",
            ONE_PRODUCT.replace("127.0.0.1:8000", upstream)
        ))
    }

    /// One product `crm` (named on line 5) whose other keys are `body`, from line 6.
    pub fn product(body: &str) -> Result<Config, String> {
        parse(&format!(
            "listen: 127.0.0.1:8080\nadmin: {{ listen: 127.0.0.1:9090 }}\nstore: {{ kind: embedded }}\n\
             products:\n  - name: crm\n{body}"
        ))
    }

    /// The keys every product needs, for [`product`]: upstream (line 6), session (7), login
    /// (8), seats (9).
    pub const BASE: &str = "    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    seats: 1
";

    /// [`BASE`] with `key`'s line replaced by `line` (or, for a key BASE lacks, added).
    pub fn base_with(key: &str, line: &str) -> String {
        let mut out: Vec<String> = BASE
            .lines()
            .map(|l| {
                if l.trim_start().starts_with(&format!("{key}:")) {
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        if !out.iter().any(|l| l == line) {
            out.push(line.to_string());
        }
        out.join("\n") + "\n"
    }
}
