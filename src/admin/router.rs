//! Path → handler. Health, metrics, the page's static files and its login form are open to
//! anyone (bind the listener privately); everything else needs an admin (`auth`), and a
//! cookie-authenticated POST also the page's CSRF token.

use super::auth::{self, Via};
use super::control::PauseOp;
use super::page;
use super::wire::{error, read_json_body};
use super::AdminService;
use http::{Method, Response, StatusCode};
use pingora_core::protocols::http::ServerSession;

/// The authenticated endpoints, to tell a wrong method (405) from an unknown path (404).
const API_PATHS: [&str; 10] = [
    "/logout",
    "/api/me",
    "/api/sessions",
    "/api/sessions/end",
    "/api/sessions/pause",
    "/api/sessions/resume",
    "/api/usage",
    "/api/queue",
    "/api/reports",
    "/api/reload",
];

/// `/api/queue/{id}` → `(id, false)`, `/api/queue/{id}/remove` → `(id, true)`: one ticket's
/// paths (the id is checked by the handler, so a malformed one is a 400, not a 404).
fn ticket_path(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/api/queue/")?;
    match rest.split_once('/') {
        None if !rest.is_empty() => Some((rest, false)),
        Some((id, "remove")) if !id.is_empty() => Some((id, true)),
        _ => None,
    }
}

impl AdminService {
    pub(super) async fn route(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        let query = s.req_header().uri.query().map(str::to_string);
        let cfg = self.app.config();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => return self.healthz().await,
            (&Method::GET, "/metrics") => return self.metrics(&cfg).await,
            (&Method::GET, p) if p.starts_with("/assets/") => {
                return page::asset(p).unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not found"));
            }
            (&Method::GET, "/" | "/usage" | "/login") => return self.page_for(s, &cfg, &path),
            (&Method::POST, "/login") => return self.page_login(s, &cfg).await,
            _ => {}
        }
        let peer = s.client_addr().map(|a| a.to_string());
        let (who, via) = match self
            .authn
            .authenticate(&cfg, s.req_header(), peer.as_deref())
        {
            Ok(p) => p,
            Err(resp) => return *resp,
        };
        // DELETE changes state like POST: a page session must prove it is the page.
        if method == Method::POST || method == Method::DELETE {
            if let Via::Cookie { sid } = &via {
                let token = s
                    .req_header()
                    .headers
                    .get(auth::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                if !self.authn.pages.csrf_ok(sid, token) {
                    s.set_keepalive(None);
                    return error(
                        StatusCode::FORBIDDEN,
                        "missing or wrong CSRF token (X-CSRF-Token)",
                    );
                }
            }
        }
        if let Some((id, remove)) = ticket_path(&path) {
            return match (&method, remove) {
                (&Method::DELETE, false) => self.remove_ticket(&who, id).await,
                (&Method::POST, true) => match read_json_body(s).await {
                    Ok(_) => self.remove_ticket(&who, id).await,
                    Err(r) => r,
                },
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            };
        }
        match (&method, path.as_str()) {
            (&Method::POST, "/logout") => self.logout(&via),
            (&Method::GET, "/api/me") => self.me(&who, &via),
            (&Method::GET, "/api/sessions") => self.sessions(&who, query.as_deref()).await,
            (&Method::GET, "/api/usage") => self.usage(&who).await,
            (&Method::GET, "/api/reports") => self.reports(&who, query.as_deref()),
            (&Method::GET, "/api/queue") => self.queue(&who, query.as_deref()).await,
            (
                &Method::POST,
                "/api/sessions/end" | "/api/sessions/pause" | "/api/sessions/resume",
            ) => {
                let body = match read_json_body(s).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match path.as_str() {
                    "/api/sessions/end" => self.end(&who, &body).await,
                    "/api/sessions/pause" => self.pause_resume(&who, &body, PauseOp::Pause).await,
                    _ => self.pause_resume(&who, &body, PauseOp::Resume).await,
                }
            }
            (&Method::POST, "/api/reload") => match read_json_body(s).await {
                Ok(_) => self.reload(&who),
                Err(r) => r,
            },
            (_, p) if API_PATHS.contains(&p) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ticket_path;

    #[test]
    fn ticket_paths() {
        assert_eq!(ticket_path("/api/queue/00ab"), Some(("00ab", false)));
        assert_eq!(ticket_path("/api/queue/00ab/remove"), Some(("00ab", true)));
        assert_eq!(ticket_path("/api/queue/zz!"), Some(("zz!", false)));
        for none in [
            "/api/queue",
            "/api/queue/",
            "/api/queue//remove",
            "/api/queue/1/x",
            "/api/queue/1/remove/",
        ] {
            assert_eq!(ticket_path(none), None, "{none}");
        }
    }
}
