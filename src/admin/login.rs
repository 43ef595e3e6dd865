//! The License Usage page's way in and out: its pages for a visitor with or without a page
//! session, the login form's POST and logout.

use super::auth::{self, LoginRefusal, Via};
use super::page;
use super::wire::{content_type, read_body};
use super::AdminService;
use crate::config::Config;
use http::{Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

impl AdminService {
    /// `GET /`, `/usage` and `/login`: the page for a logged-in visitor, the form for anyone
    /// else (a stale cookie is cleared on the way).
    pub(super) fn page_for(
        &self,
        s: &ServerSession,
        cfg: &Config,
        path: &str,
    ) -> Response<Vec<u8>> {
        let cookie =
            crate::policy::cookies::request_cookie(&s.req_header().headers, auth::PAGE_COOKIE);
        let logged_in = cookie.is_some_and(|c| self.authn.pages.check(cfg, c).is_ok());
        match (path, logged_in) {
            ("/login", false) => page::login(StatusCode::OK, None),
            ("/login", true) => page::see_other("/", None),
            (_, true) => page::index(),
            (_, false) => page::see_other(
                "/login",
                cookie
                    .is_some()
                    .then(|| page::clear_cookie(self.app.config().admin.tls.is_some())),
            ),
        }
    }

    /// `POST /login` from the page's form: a page session cookie, or the form again.
    pub(super) async fn page_login(
        &self,
        s: &mut ServerSession,
        cfg: &Config,
    ) -> Response<Vec<u8>> {
        if content_type(s) != "application/x-www-form-urlencoded" {
            s.set_keepalive(None);
            return page::login(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("The login form must be sent as a form."),
            );
        }
        let body = match read_body(s).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let (mut user, mut password) = (None, None);
        for (k, v) in form_urlencoded::parse(&body) {
            match k.as_ref() {
                "username" => user = Some(v.into_owned()),
                "password" => password = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(user), Some(password)) = (user.filter(|u| !u.is_empty()), password) else {
            return page::login(
                StatusCode::BAD_REQUEST,
                Some("Enter a user name and a password."),
            );
        };
        let peer = s.client_addr().map(|a| a.to_string());
        let p = match self.authn.attempt(cfg, &user, &password, peer.as_deref()) {
            Ok(p) => p,
            Err(LoginRefusal::Throttled) => {
                return page::login(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("Too many failed logins: wait a minute."),
                )
            }
            Err(LoginRefusal::Wrong) => {
                log::warn!(
                    "admin page login failed for user {user:?} from {}",
                    peer.as_deref().unwrap_or("?")
                );
                self.app.audit.record(
                    "admin_login_failed",
                    json!({"admin": user.chars().take(64).collect::<String>(), "peer": peer}),
                );
                return page::login(
                    StatusCode::UNAUTHORIZED,
                    Some("Wrong user name or password."),
                );
            }
        };
        let ttl = cfg.admin.session_ttl;
        match self.authn.pages.start(cfg, &p.name, ttl) {
            Some(cookie) => {
                self.app
                    .audit
                    .record("admin_login", json!({"admin": p.name, "peer": peer}));
                page::see_other(
                    "/",
                    Some(page::session_cookie(
                        &cookie,
                        ttl.as_secs(),
                        cfg.admin.tls.is_some(),
                    )),
                )
            }
            None => page::login(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Too many open admin sessions; try again later."),
            ),
        }
    }

    /// `POST /logout`: ends a page session at once (a Basic client has none to end).
    pub(super) fn logout(&self, via: &Via) -> Response<Vec<u8>> {
        if let Via::Cookie { sid } = via {
            self.authn.pages.end(sid);
        }
        page::see_other(
            "/login",
            Some(page::clear_cookie(self.app.config().admin.tls.is_some())),
        )
    }
}
