//! The admin listener: `/metrics`, `/healthz`, the JSON API and the License Usage page.
//!
//! Two ways in (see `auth`): HTTP Basic for API clients and the CLI, or the page's login
//! cookie. A cookie-authenticated POST must carry the page's CSRF token; a Basic one needs
//! none, but any POST body must be JSON, which a cross-site form cannot send (so a browser
//! that cached Basic credentials cannot be made to end sessions by another site).
//!
//! * `router`: path and method → handler, authentication and the CSRF check.
//! * `rbac`: who may see and do what (pure, table-tested).
//! * `views`: the JSON shapes of sessions, pools and the caller; filters and paging.
//! * `handlers` (reads and the open endpoints), `control` (end, pause, resume, reload),
//!   `login` (the page's login and logout).
//! * `wire`: JSON answers and bounded request bodies.
//! * `auth`, `page`, `reports`: credentials and page sessions, the embedded page, usage
//!   reports.

pub mod auth;
mod control;
mod handlers;
mod login;
pub mod page;
pub mod rbac;
pub mod reports;
mod router;
pub mod views;
mod wire;

use crate::app::App;
use async_trait::async_trait;
use auth::Authn;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use reports::Reports;
use std::sync::Arc;

pub struct AdminService {
    pub app: Arc<App>,
    pub authn: Authn,
    pub reports: Arc<Reports>,
}

impl AdminService {
    pub fn new(app: Arc<App>, reports: Arc<Reports>) -> Self {
        AdminService {
            app,
            authn: Authn::default(),
            reports,
        }
    }
}

#[async_trait]
impl ServeHttp for AdminService {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let r = self.route(s).await;
        // A body we did not read cannot be followed by another request on this connection.
        if !s.is_body_done() {
            s.set_keepalive(None);
        }
        r
    }
}

/// Fixtures for the admin modules' tests.
#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::domain::{PoolKey, SeatId, SeatRecord, SeatState};

    /// An active web seat of `user` on `product`'s default pool.
    pub(super) fn seat(product: &str, user: &str) -> SeatRecord {
        SeatRecord {
            id: SeatId(1),
            pool: PoolKey::new(product, "default"),
            user: Some(user.into()),
            device: None,
            client: "web".into(),
            session: None,
            started_at: 0,
            last_activity: 0,
            last_heartbeat: 0,
            last_request: 0,
            last_input: 0,
            state: SeatState::Active,
            ending_at: None,
            overflow: false,
            ended_by: None,
        }
    }

    /// A config with one product, `crm` (one seat, idle 10m, lifetime 1h), and `admin` as
    /// its `admin:` section.
    pub(super) fn crm_config(admin: &str) -> Config {
        let yaml = [
            "listen: 127.0.0.1:1",
            admin,
            "store: { kind: embedded, path: /tmp/x.redb }",
            "products:",
            "  - name: crm",
            "    upstream: 127.0.0.1:3",
            "    session: { cookie: SID, idle_timeout: 10m, max_lifetime: 1h }",
            "    login: { path: /login, method: POST, user: { form_field: username } }",
            "    seats: 1",
        ]
        .join("\n");
        crate::config::parse(&yaml).unwrap()
    }
}
