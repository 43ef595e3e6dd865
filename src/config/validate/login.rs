//! `products[].login` and `logout`: where they are, their method, and where the login names
//! its user (needed when seats are counted per user).

use super::fields;
use super::locate::Locator;
use crate::config::file;
use crate::config::{ConfigError, LoginRule, LogoutRule, SeatsPer, UserSource};

pub fn login(
    l: &file::LoginFile,
    seats_per: SeatsPer,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<LoginRule, ConfigError> {
    let user = match &l.user {
        None => UserSource::None,
        Some(u) => match (&u.form_field, &u.header) {
            (Some(f), None) if !f.is_empty() => UserSource::Form(f.clone()),
            (None, Some(h)) => {
                UserSource::Header(fields::header_name(h, &k("login.user.header"), ctx, loc)?)
            }
            _ => {
                return Err(loc.invalid(
                    &k("login.user"),
                    Some(ctx),
                    "give exactly one of `form_field` or `header`",
                ))
            }
        },
    };
    if seats_per != SeatsPer::Session && user == UserSource::None {
        return Err(loc.invalid(
            &k("login.user"),
            Some(ctx),
            "required when seats_per is `user` or `user_device`",
        ));
    }
    Ok(LoginRule {
        path: fields::path(&l.path, &k("login.path"), ctx, loc)?,
        method: fields::method(
            l.method.as_deref().unwrap_or("POST"),
            &k("login.method"),
            ctx,
            loc,
        )?,
        user,
    })
}

pub fn logout(
    l: Option<&file::LogoutFile>,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<Option<LogoutRule>, ConfigError> {
    let Some(l) = l else { return Ok(None) };
    Ok(Some(LogoutRule {
        path: fields::path(&l.path, &k("logout.path"), ctx, loc)?,
        method: l
            .method
            .as_deref()
            .map(|m| fields::method(m, &k("logout.method"), ctx, loc))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{base_with, product, BASE};
    use crate::config::{LoginRule, UserSource};
    use http::{HeaderName, Method};

    fn login(line: &str) -> Result<LoginRule, String> {
        product(&base_with("login", line)).map(|c| c.products[0].login.clone())
    }

    #[test]
    fn login_path_method_and_user() {
        let l = product(BASE).unwrap().products[0].login.clone();
        assert_eq!(
            (l.path.as_str(), l.method, l.user),
            ("/login", Method::POST, UserSource::None)
        );
        let l = login("    login: { path: /signin, method: put, user: { form_field: username } }")
            .unwrap();
        assert_eq!(
            (l.path.as_str(), l.method, l.user),
            ("/signin", Method::PUT, UserSource::Form("username".into()))
        );
        let l = login("    login: { path: /login, user: { header: X-User } }").unwrap();
        assert_eq!(
            l.user,
            UserSource::Header(HeaderName::from_static("x-user"))
        );
        let c =
            product(&(BASE.to_string() + "    logout: { path: /logout, method: GET }\n")).unwrap();
        let o = c.products[0].logout.as_ref().unwrap();
        assert_eq!(
            (o.path.as_str(), o.method.clone()),
            ("/logout", Some(Method::GET))
        );
        assert!(product(BASE).unwrap().products[0].logout.is_none());
    }

    #[test]
    fn login_errors_name_the_key_and_line() {
        let err = |line: &str| login(line).unwrap_err();
        assert_eq!(
            err("    login: { path: login }"),
            "products[0].login.path (line 8): `login` must be a path starting with /"
        );
        assert_eq!(
            err("    login: { path: /login, method: FETCH }"),
            "products[0].login.method (line 8): unknown HTTP method `FETCH`"
        );
        for user in [
            "{ form_field: u, header: X-U }",
            "{ form_field: \"\" }",
            "{}",
        ] {
            assert_eq!(
                err(&format!("    login: {{ path: /login, user: {user} }}")),
                "products[0].login.user (line 8): give exactly one of `form_field` or `header`"
            );
        }
        assert_eq!(
            err("    login: { path: /login, user: { header: \"X U\" } }"),
            "products[0].login.user.header (line 8): `X U` is not a valid header name"
        );
        // Counting per user needs to know the user; no `user:` in the file, so the product's
        // own line.
        assert_eq!(
            product(&(BASE.to_string() + "    seats_per: user\n")).unwrap_err(),
            "products[0].login.user (line 5): required when seats_per is `user` or `user_device`"
        );
        // The line is the first `path:` (`method:`) below the product's name, whichever
        // section it is in; so here logout comes first.
        let logout = |l: &str| {
            product(&base_with(
                "login",
                &format!("{l}\n    login: {{ path: /login }}"),
            ))
            .unwrap_err()
        };
        assert_eq!(
            logout("    logout: { path: out }"),
            "products[0].logout.path (line 8): `out` must be a path starting with /"
        );
        assert_eq!(
            logout("    logout: { path: /out, method: FETCH }"),
            "products[0].logout.method (line 8): unknown HTTP method `FETCH`"
        );
    }
}
