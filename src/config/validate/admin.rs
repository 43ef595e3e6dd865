//! `admin`: its listener (never one of the gateway's), TLS, and users (inline and from
//! `users_file`, whose errors point at that file's lines), each with a checked password hash.

use super::listen::cert_pair;
use super::locate::Locator;
use crate::config::file;
use crate::config::{AdminConfig, AdminUser, ConfigError, Listener, Permission};
use std::collections::HashSet;
use std::time::Duration;

/// The admin page's own login lasts a working day unless `session_ttl` says otherwise.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

pub fn admin(
    a: file::AdminFile,
    listen: &[Listener],
    loc: &Locator,
) -> Result<AdminConfig, ConfigError> {
    if listen.iter().any(|l| l.address == a.listen.0) {
        return Err(loc.invalid("admin.listen", None, "must differ from `listen`"));
    }
    let tls = a
        .tls
        .as_ref()
        .map(|t| cert_pair(t, "admin.tls", None, loc))
        .transpose()?;
    let users = users(a.users, a.users_file.as_deref(), loc)?;
    // An admin API reachable from the network with nobody allowed in is a misconfiguration
    // waiting to be "fixed" by disabling auth: refuse it at load.
    let loopback = a
        .listen
        .0
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || a.listen.0.starts_with("localhost:");
    if users.is_empty() && !loopback {
        return Err(loc.invalid(
            "admin.users",
            None,
            "at least one admin user is required when admin.listen is not a loopback address",
        ));
    }
    Ok(AdminConfig {
        listen: a.listen.0,
        tls,
        users,
        session_ttl: a.session_ttl.map_or(DEFAULT_SESSION_TTL, |d| d.0),
    })
}

/// Inline users first, then `users_file`'s; names are unique across both.
fn users(
    inline: Vec<file::AdminUserFile>,
    users_file: Option<&std::path::Path>,
    loc: &Locator,
) -> Result<Vec<AdminUser>, ConfigError> {
    let n_inline = inline.len();
    let mut all = inline;
    let file_text = match users_file {
        Some(path) => {
            let (more, text) = read_users_file(path, loc)?;
            all.extend(more);
            text
        }
        None => String::new(),
    };
    // Problems of a user from `users_file` point at that file's lines.
    let file_loc = Locator { src: &file_text };
    let mut users = Vec::new();
    let mut seen = HashSet::new();
    for (i, u) in all.into_iter().enumerate() {
        let (key, loc) = match i.checked_sub(n_inline) {
            None => (format!("admin.users[{i}]"), loc),
            Some(j) => (format!("admin.users_file[{j}]"), &file_loc),
        };
        if !seen.insert(u.name.clone()) {
            return Err(loc.invalid(&key, Some(&u.name), "duplicate admin user name"));
        }
        if let Err(why) = crate::crypto::check_password_hash(&u.password_hash) {
            return Err(loc.invalid(&format!("{key}.password_hash"), Some(&u.name), &why));
        }
        users.push(AdminUser {
            name: u.name,
            password_hash: u.password_hash,
            role: u.role,
            products: u.products,
            permission: u.permission.unwrap_or(Permission::Control),
        });
    }
    Ok(users)
}

/// Every product an admin user is limited to must exist.
pub fn user_products(
    users: &[AdminUser],
    names: &HashSet<String>,
    loc: &Locator,
) -> Result<(), ConfigError> {
    for u in users {
        for p in &u.products {
            if !names.contains(p) {
                return Err(loc.invalid(
                    &format!("admin.users({}).products", u.name),
                    Some(&u.name),
                    &format!("unknown product `{p}`"),
                ));
            }
        }
    }
    Ok(())
}

/// `admin.users_file`: a YAML list of admin users; its own syntax errors carry its name and
/// line.
fn read_users_file(
    path: &std::path::Path,
    loc: &Locator,
) -> Result<(Vec<file::AdminUserFile>, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        loc.invalid(
            "admin.users_file",
            None,
            &format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let users = serde_norway::from_str(&text).map_err(|e| {
        loc.invalid(
            "admin.users_file",
            None,
            &format!("`{}`: {e}", path.display()),
        )
    })?;
    Ok((users, text))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, ONE_PRODUCT};
    use crate::config::{Config, Permission, Role};
    use std::time::Duration;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2VhdGdhdGV0ZXN0c2FsdA$xwt22nhxGHOng06uYvCr5kGuuUXnPByRF5OnP0l5ZK8";

    /// `admin:` on line 2, its keys (`body`, indented two spaces) from line 3.
    fn admin(body: &str) -> Result<Config, String> {
        parse(&format!(
            "listen: 127.0.0.1:8080\nadmin:\n{}\nstore: {{ kind: embedded }}\n{ONE_PRODUCT}",
            body.replace("HASH", HASH)
        ))
    }

    #[test]
    fn users_and_session_ttl_are_read() {
        let c = admin(
            "  listen: 0.0.0.0:9090
  users:
    - { name: ann, password_hash: \"HASH\", role: super }
    - { name: bob, password_hash: \"HASH\", role: domain, products: [crm], permission: view }
  session_ttl: 1h",
        )
        .unwrap();
        let a = &c.admin;
        assert_eq!(
            (a.listen.as_str(), a.session_ttl),
            ("0.0.0.0:9090", Duration::from_secs(3600))
        );
        assert!(a.tls.is_none());
        let users: Vec<_> = a
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.role, u.permission))
            .collect();
        assert_eq!(
            users,
            [
                ("ann", Role::Super, Permission::Control),
                ("bob", Role::Domain, Permission::View)
            ]
        );
        // Loopback without users: allowed, and a working day of admin login.
        let c = admin("  listen: 127.0.0.1:9090").unwrap();
        assert_eq!(
            (c.admin.users.len(), c.admin.session_ttl),
            (0, Duration::from_secs(8 * 3600))
        );
    }

    #[test]
    fn admin_errors_name_the_key_and_line() {
        assert_eq!(
            admin("  listen: 127.0.0.1:8080").unwrap_err(),
            "admin.listen (line 1): must differ from `listen`"
        );
        assert_eq!(
            admin("  listen: 0.0.0.0:9090").unwrap_err(),
            "admin.users: at least one admin user is required when admin.listen is not a \
             loopback address"
        );
        assert_eq!(
            admin("  listen: 127.0.0.1:9090\n  users:\n    - { name: ann, password_hash: x, role: super }")
                .unwrap_err(),
            "admin.users[0].password_hash (line 5): not a PHC password hash (make one with \
             `seatgate hash-password`)"
        );
        assert_eq!(
            admin(
                "  listen: 127.0.0.1:9090
  users:
    - { name: ann, password_hash: \"HASH\", role: super }
    - { name: ann, password_hash: \"HASH\", role: own }"
            )
            .unwrap_err(),
            "admin.users[1] (line 5): duplicate admin user name"
        );
        assert_eq!(
            admin(
                "  listen: 127.0.0.1:9090
  users:
    - { name: ann, password_hash: \"HASH\", role: domain, products: [crm, erp] }"
            )
            .unwrap_err(),
            "admin.users(ann).products (line 5): unknown product `erp`"
        );
        let e =
            admin("  listen: 127.0.0.1:9090\n  users_file: /nonexistent/users.yaml").unwrap_err();
        assert!(
            e.starts_with("admin.users_file (line 4): cannot read `/nonexistent/users.yaml`: "),
            "{e}"
        );
    }

    #[test]
    fn a_users_file_error_points_at_that_files_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        std::fs::write(
            &path,
            format!("- {{ name: ann, password_hash: \"{HASH}\", role: super }}\n- {{ name: bob, password_hash: weak, role: own }}\n"),
        )
        .unwrap();
        let e = admin(&format!(
            "  listen: 127.0.0.1:9090\n  users_file: {}",
            path.display()
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "admin.users_file[1].password_hash (line 2): not a PHC password hash (make one with \
             `seatgate hash-password`)"
        );
        std::fs::write(&path, "- { name: ann, role: super }\n").unwrap();
        let e = admin(&format!(
            "  listen: 127.0.0.1:9090\n  users_file: {}",
            path.display()
        ))
        .unwrap_err();
        assert!(e.starts_with("admin.users_file (line 4): `"), "{e}");
        assert!(e.contains("missing field `password_hash`"), "{e}");
    }
}
