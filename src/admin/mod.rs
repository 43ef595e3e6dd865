//! The admin listener: `/metrics`, `/healthz`, the JSON API and the License Usage page.
//!
//! Authentication is HTTP Basic against argon2 hashes from the config. argon2 is slow on
//! purpose, so a verified credential is remembered (as a SHA-256 of name and password, never
//! the password) for a short while; failures are never cached.

pub mod auth;

use crate::app::App;
use crate::config::{Config, Permission, Role};
use crate::ledger::{now_ms, EndOutcome, Millis, SeatId, SeatRecord};
use async_trait::async_trait;
use auth::{Authn, Principal};
use bytes::BytesMut;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const MAX_ADMIN_BODY: usize = 64 * 1024;
const DEFAULT_GRACE_SECONDS: u64 = 30;
const MAX_GRACE_SECONDS: u64 = 24 * 3600;

pub struct AdminService {
    pub app: Arc<App>,
    pub authn: Authn,
}

impl AdminService {
    pub fn new(app: Arc<App>) -> Self {
        AdminService {
            app,
            authn: Authn::default(),
        }
    }
}

pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    let body = v.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn error(status: StatusCode, msg: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": msg }))
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

/// What an admin may see or do, derived from its role (pure, tested below).
pub fn may_see(p: &Principal, seat: &SeatRecord) -> bool {
    match p.role {
        Role::Super => true,
        Role::Domain => p.products.iter().any(|x| x == &seat.pool.product),
        Role::Own => seat.user.as_deref() == Some(p.name.as_str()),
    }
}

pub fn may_control(p: &Principal, seat: &SeatRecord) -> bool {
    p.permission == Permission::Control && may_see(p, seat)
}

/// Parsed `GET /api/sessions` filters; unknown parameters are an error, not ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub product: Option<String>,
    pub license_type: Option<String>,
    pub state: Option<String>,
}

pub fn parse_filter(query: Option<&str>) -> Result<SessionFilter, String> {
    let mut f = SessionFilter::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        if v.len() > 256 {
            return Err(format!("filter `{k}` is too long"));
        }
        let v = Some(v).filter(|v| !v.is_empty());
        match k.as_ref() {
            "user" => f.user = v,
            "product" => f.product = v,
            "license_type" | "pool" => f.license_type = v,
            "state" => {
                if let Some(s) = &v {
                    if !["active", "standby", "ending", "paused"].contains(&s.as_str()) {
                        return Err(format!("unknown state `{s}`"));
                    }
                }
                f.state = v
            }
            other => {
                return Err(format!(
                    "unknown filter `{other}` (user, product, license_type, state)"
                ))
            }
        }
    }
    Ok(f)
}

impl SessionFilter {
    pub fn matches(&self, s: &SeatRecord) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| s.user.as_deref() == Some(u.as_str()))
            && self.product.as_ref().is_none_or(|p| &s.pool.product == p)
            && self.license_type.as_ref().is_none_or(|l| &s.pool.pool == l)
            && self.state.as_ref().is_none_or(|st| s.state.as_str() == st)
    }
}

/// The JSON shape of one session (DESIGN.md contract, plus a few extra fields).
pub fn session_json(cfg: &Config, s: &SeatRecord) -> Value {
    let expires_at = cfg.product(&s.pool.product).map(|p| {
        let lifetime = s.started_at + p.session.max_lifetime.as_millis() as u64;
        let idle = s.last_activity + p.session.idle_timeout.as_millis() as u64;
        let mut at = lifetime.min(idle);
        // Presence counts only once the session's page has sent a heartbeat.
        if let Some(pt) = p.session.presence_timeout.filter(|_| s.last_heartbeat > 0) {
            at = at.min(s.last_heartbeat.max(s.last_activity) + pt.as_millis() as u64);
        }
        if let Some(e) = s.ending_at {
            at = at.min(e);
        }
        at
    });
    json!({
        "id": s.id.to_string(),
        "product": s.pool.product,
        "user": s.user,
        "device": s.device.as_ref().map(|d| d.chars().take(8).collect::<String>()),
        "client": s.client,
        "license_type": s.pool.pool,
        "state": s.state.as_str(),
        "started_at": rfc3339(s.started_at),
        "last_activity": rfc3339(s.last_activity),
        "last_heartbeat": (s.last_heartbeat > 0).then(|| rfc3339(s.last_heartbeat)),
        "expires_at": expires_at.map(rfc3339),
        "ending_at": s.ending_at.map(rfc3339),
        "ended_by": s.ended_by,
        "overflow": s.overflow,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndRequest {
    ids: Vec<String>,
    #[serde(default)]
    grace_seconds: Option<u64>,
}

async fn read_body(s: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut buf = BytesMut::new();
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_ADMIN_BODY {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body is larger than 64 KiB",
                    ));
                }
            }
            Ok(None) => return Ok(buf.to_vec()),
            Err(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body",
                ))
            }
        }
    }
}

impl AdminService {
    async fn sessions(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let filter = match parse_filter(query) {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let cfg = self.app.config();
        match self.app.ledger.sessions(now_ms()).await {
            Ok(list) => {
                let out: Vec<Value> = list
                    .iter()
                    .filter(|s| may_see(who, s) && filter.matches(s))
                    .map(|s| session_json(&cfg, s))
                    .collect();
                json_response(StatusCode::OK, &Value::Array(out))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        }
    }

    async fn end(&self, who: &Principal, body: &[u8]) -> Response<Vec<u8>> {
        let req: EndRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"ids\": [..], \"grace_seconds\": N}}: {e}"),
                )
            }
        };
        if req.ids.is_empty() || req.ids.len() > 1000 {
            return error(
                StatusCode::BAD_REQUEST,
                "`ids` must list 1 to 1000 session ids",
            );
        }
        let grace = req.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > MAX_GRACE_SECONDS {
            return error(
                StatusCode::BAD_REQUEST,
                "`grace_seconds` must be at most 86400",
            );
        }
        let mut ids = Vec::with_capacity(req.ids.len());
        for raw in &req.ids {
            match raw.parse::<SeatId>() {
                Ok(id) => ids.push(id),
                Err(()) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("`{raw}` is not a session id"),
                    )
                }
            }
        }
        let now = now_ms();
        let list = match self.app.ledger.sessions(now).await {
            Ok(l) => l,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        };
        let by_id: HashMap<SeatId, &SeatRecord> = list.iter().map(|s| (s.id, s)).collect();
        // All-or-nothing on permissions and existence, so a batch never half-applies.
        for id in &ids {
            match by_id.get(id) {
                Some(s) if !may_see(who, s) => {
                    return error(StatusCode::NOT_FOUND, &format!("unknown session {id}"))
                }
                Some(s) if !may_control(who, s) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        &format!("not allowed to end session {id}"),
                    )
                }
                Some(_) => {}
                None => {
                    let code = match self.app.ledger.end(&[*id], 0, &who.name, now).await {
                        Ok(v)
                            if v.first()
                                .is_some_and(|(_, o)| *o == EndOutcome::AlreadyEnded) =>
                        {
                            StatusCode::CONFLICT
                        }
                        _ => StatusCode::NOT_FOUND,
                    };
                    let msg = if code == StatusCode::CONFLICT {
                        "already ended"
                    } else {
                        "unknown session"
                    };
                    return error(code, &format!("{msg} {id}"));
                }
            }
        }
        match self
            .app
            .ledger
            .end(&ids, grace * 1000, &who.name, now)
            .await
        {
            Ok(results) => {
                let mut out = Vec::new();
                for (id, o) in results {
                    let (state, at) = match o {
                        EndOutcome::Ending { at } => ("ending", Some(rfc3339(at))),
                        EndOutcome::AlreadyEnded => ("already_ended", None),
                        EndOutcome::NotFound => ("not_found", None),
                    };
                    if let Some(s) = by_id.get(&id) {
                        let mut f = self.app.audit.seat_fields(s);
                        f["by"] = json!(who.name);
                        f["grace_seconds"] = json!(grace);
                        self.app.audit.record("end", f);
                    }
                    out.push(json!({"id": id.to_string(), "result": state, "ends_at": at}));
                }
                json_response(StatusCode::OK, &json!({ "ended": out }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        }
    }

    async fn usage(&self, who: &Principal) -> Response<Vec<u8>> {
        match self.app.ledger.usage(now_ms()).await {
            Ok(u) => {
                let out: Vec<Value> = u
                    .iter()
                    .filter(|u| match who.role {
                        Role::Domain => who.products.contains(&u.product),
                        _ => true,
                    })
                    .map(|u| {
                        json!({"product": u.product, "pool": u.pool, "capacity": u.capacity, "in_use": u.in_use,
                            "available": u.available, "peak": u.peak, "denied": u.denied, "standby": u.standby,
                            "ending": u.ending, "overflow_used_seconds": u.overflow_used_seconds})
                    })
                    .collect();
                json_response(StatusCode::OK, &Value::Array(out))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
        }
    }

    async fn route(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        let query = s.req_header().uri.query().map(str::to_string);
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => {
                let ok = self.app.ledger.healthy().await;
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return json_response(
                    status,
                    &json!({"status": if ok {"ok"} else {"unavailable"}, "store": if ok {"ok"} else {"down"},
                        "store_detail": self.app.ledger.describe()}),
                );
            }
            (&Method::GET, "/metrics") => {
                let usage = self.app.ledger.usage(now_ms()).await.unwrap_or_default();
                let body = self.app.metrics.render(&usage).into_bytes();
                return text(StatusCode::OK, "text/plain; version=0.0.4", body);
            }
            _ => {}
        }
        let cfg = self.app.config();
        let peer = s.client_addr().map(|a| a.to_string());
        let who = match self
            .authn
            .authenticate(&cfg, s.req_header(), peer.as_deref())
        {
            Ok(p) => p,
            Err(resp) => return *resp,
        };
        match (&method, path.as_str()) {
            (&Method::GET, "/api/sessions") => self.sessions(&who, query.as_deref()).await,
            (&Method::POST, "/api/sessions/end") => match read_body(s).await {
                Ok(b) => self.end(&who, &b).await,
                Err(r) => r,
            },
            (&Method::GET, "/api/usage") => self.usage(&who).await,
            (&Method::POST, "/api/reload") => {
                if who.role != Role::Super {
                    return error(StatusCode::FORBIDDEN, "reload needs role super");
                }
                match self.app.reload() {
                    Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
                    Err(e) => {
                        log::error!("reload refused: {e}");
                        error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &format!("reload refused, old config kept: {e}"),
                        )
                    }
                }
            }
            (_, "/api/sessions" | "/api/sessions/end" | "/api/usage" | "/api/reload") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminService {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        self.route(s).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{PoolKey, SeatState};

    fn seat(product: &str, user: &str) -> SeatRecord {
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
            state: SeatState::Active,
            ending_at: None,
            overflow: false,
            ended_by: None,
        }
    }

    fn who(role: Role, products: &[&str], permission: Permission) -> Principal {
        Principal {
            name: "kim".into(),
            role,
            products: products.iter().map(|s| s.to_string()).collect(),
            permission,
        }
    }

    #[test]
    fn roles() {
        let crm_kim = seat("crm", "kim");
        let crm_bob = seat("crm", "bob");
        let hr_bob = seat("hr", "bob");
        let sup = who(Role::Super, &[], Permission::Control);
        let dom = who(Role::Domain, &["crm"], Permission::Control);
        let own = who(Role::Own, &[], Permission::Control);
        let viewer = who(Role::Domain, &["crm"], Permission::View);
        assert!(may_see(&sup, &hr_bob) && may_control(&sup, &hr_bob));
        assert!(may_see(&dom, &crm_bob) && !may_see(&dom, &hr_bob));
        assert!(may_see(&own, &crm_kim) && !may_see(&own, &crm_bob));
        assert!(may_see(&viewer, &crm_bob) && !may_control(&viewer, &crm_bob));
    }

    #[test]
    fn filters() {
        assert_eq!(parse_filter(None).unwrap(), SessionFilter::default());
        let f = parse_filter(Some("user=bob&product=crm&license_type=")).unwrap();
        assert_eq!(
            f,
            SessionFilter {
                user: Some("bob".into()),
                product: Some("crm".into()),
                ..Default::default()
            }
        );
        assert!(f.matches(&seat("crm", "bob")) && !f.matches(&seat("hr", "bob")));
        assert_eq!(
            parse_filter(Some("usr=x")).unwrap_err(),
            "unknown filter `usr` (user, product, license_type, state)"
        );
        assert!(parse_filter(Some("state=zombie")).is_err());
    }
}
