//! The admin listener: `/metrics`, `/healthz`, the JSON API and the License Usage page.
//!
//! Two ways in (see `auth`): HTTP Basic for API clients and the CLI, or the page's login
//! cookie. A cookie-authenticated POST must carry the page's CSRF token; a Basic one needs
//! none, but any POST body must be JSON, which a cross-site form cannot send (so a browser
//! that cached Basic credentials cannot be made to end sessions by another site).
//!
//! Who may see and do what is decided by pure functions here (`may_see`, `may_control`,
//! `may_pause`), unit-tested below. A paused session is listed for its owner only: it holds no
//! seat, so nobody else has anything to free.

pub mod auth;
pub mod page;
pub mod reports;

use crate::app::{pool_specs, App};
use crate::config::{Config, Permission, Role};
use crate::ledger::{
    now_ms, EndOutcome, Lookup, Millis, PauseOutcome, PoolKey, PoolSpec, SeatId, SeatRecord,
    SeatState,
};
use crate::policy::seat::{deadline, SeatTimes};
use async_trait::async_trait;
use auth::{Authn, Principal, Via};
use bytes::BytesMut;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use reports::Reports;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const MAX_ADMIN_BODY: usize = 64 * 1024;
const MAX_IDS: usize = 1000;
const DEFAULT_GRACE_SECONDS: u64 = 30;
const MAX_GRACE_SECONDS: u64 = 24 * 3600;

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

fn owner(p: &Principal, seat: &SeatRecord) -> bool {
    seat.user.as_deref() == Some(p.name.as_str())
}

/// What an admin may see or do, derived from its role (pure, tested below).
pub fn may_see(p: &Principal, seat: &SeatRecord) -> bool {
    if seat.state == SeatState::Paused && !owner(p, seat) {
        return false;
    }
    match p.role {
        Role::Super => true,
        Role::Domain => p.products.iter().any(|x| x == &seat.pool.product),
        Role::Own => owner(p, seat),
    }
}

pub fn may_control(p: &Principal, seat: &SeatRecord) -> bool {
    p.permission == Permission::Control && may_see(p, seat)
}

/// Pausing keeps a session but gives up its seat: a choice for the session's owner only.
pub fn may_pause(p: &Principal, seat: &SeatRecord) -> bool {
    may_control(p, seat) && owner(p, seat)
}

/// Whether `p` sees a product's pool counts and reports at all.
pub fn may_see_product(p: &Principal, product: &str) -> bool {
    p.role != Role::Domain || p.products.iter().any(|x| x == product)
}

/// Parsed `GET /api/sessions` filters; unknown parameters are an error, not ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub product: Option<String>,
    pub license_type: Option<String>,
    pub state: Option<String>,
    /// Paging: at most this many sessions, ordered by id, after `cursor` (an id).
    pub limit: Option<usize>,
    pub cursor: Option<SeatId>,
}

/// The most sessions one page may ask for.
pub const MAX_PAGE: usize = 1000;

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
                    if !["active", "standby", "ending", "paused", "exempt", "named"]
                        .contains(&s.as_str())
                    {
                        return Err(format!("unknown state `{s}`"));
                    }
                }
                f.state = v
            }
            "limit" => {
                let n = v.as_deref().map(str::parse::<usize>);
                match n {
                    Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => f.limit = Some(n),
                    _ => return Err(format!("`limit` must be a number from 1 to {MAX_PAGE}")),
                }
            }
            "cursor" => {
                f.cursor = match v.as_deref().map(str::parse::<SeatId>) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(())) => return Err("`cursor` must be a session id".into()),
                }
            }
            other => {
                return Err(format!(
                    "unknown filter `{other}` (user, product, license_type, state, limit, cursor)"
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

/// The pools of the running config, to compute when each listed seat ends.
pub fn spec_map(cfg: &Config) -> HashMap<PoolKey, PoolSpec> {
    pool_specs(cfg)
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect()
}

/// The JSON shape of one session (DESIGN.md contract, plus a few extra fields).
/// `expires_at` is the instant the seat stops counting unless something renews it: the same
/// rule the ledger applies (idle, lifetime, presence, standby, end), so the page can drop an
/// expired row without waiting for the next poll.
pub fn session_json(specs: &HashMap<PoolKey, PoolSpec>, s: &SeatRecord) -> Value {
    let expires_at = specs.get(&s.pool).map(|spec| {
        deadline(
            spec,
            &SeatTimes {
                started_at: s.started_at,
                last_activity: s.last_activity,
                last_heartbeat: s.last_heartbeat,
                state: s.state,
                ending_at: s.ending_at,
            },
        )
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
        // Every request, ignored ones included (`session.activity`), and the person's input
        // as the heartbeat reported it: who is really away. `null` for never (or not since
        // the gateway recorded it).
        "last_request": (s.last_request > 0).then(|| rfc3339(s.last_request)),
        "last_input": (s.last_input > 0).then(|| rfc3339(s.last_input)),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsRequest {
    ids: Vec<String>,
}

/// Session ids from a request: 1 to [`MAX_IDS`], each a valid id, duplicates dropped.
fn parse_ids(raw: &[String]) -> Result<Vec<SeatId>, String> {
    if raw.is_empty() || raw.len() > MAX_IDS {
        return Err("`ids` must list 1 to 1000 session ids".into());
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(raw.len());
    for r in raw {
        let id = r
            .parse::<SeatId>()
            .map_err(|()| format!("`{r}` is not a session id"))?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn content_type(s: &ServerSession) -> String {
    s.req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// How much of an oversized body is read and dropped before answering 413, so the client
/// gets to read the answer (closing on unread data makes the kernel reset the connection).
const MAX_DRAIN: usize = 1024 * 1024;

/// Reads a bounded body; an oversized one is drained (up to [`MAX_DRAIN`]) and refused.
async fn read_body(s: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 64 KiB",
        )
    };
    let declared = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN as u64) {
        s.set_keepalive(None);
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                seen += chunk.len();
                if seen > MAX_DRAIN {
                    s.set_keepalive(None);
                    return Err(too_large());
                }
                if seen <= MAX_ADMIN_BODY {
                    buf.extend_from_slice(&chunk);
                }
            }
            Ok(None) if seen > MAX_ADMIN_BODY => return Err(too_large()),
            Ok(None) => return Ok(buf.to_vec()),
            Err(_) => {
                s.set_keepalive(None);
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body",
                ));
            }
        }
    }
}

/// The body of an API POST: empty, or JSON (see the module doc on why nothing else).
async fn read_json_body(s: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let ct = content_type(s);
    let body = read_body(s).await?;
    if !body.is_empty() && ct != "application/json" {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as application/json",
        ));
    }
    Ok(body)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {shape}: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PauseOp {
    Pause,
    Resume,
}

impl AdminService {
    async fn list(&self) -> Result<Vec<SeatRecord>, Response<Vec<u8>>> {
        self.app
            .ledger
            .sessions(now_ms())
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")))
    }

    async fn sessions(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let filter = match parse_filter(query) {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let specs = spec_map(&self.app.config());
        match self.list().await {
            Ok(list) => {
                let mut seen: Vec<&SeatRecord> = list
                    .iter()
                    .filter(|s| may_see(who, s) && filter.matches(s))
                    .collect();
                let mut next = None;
                if let Some(limit) = filter.limit {
                    // By id, so a page boundary stays put while sessions come and go.
                    seen.sort_by_key(|s| s.id);
                    seen.retain(|s| filter.cursor.is_none_or(|c| s.id > c));
                    if seen.len() > limit {
                        seen.truncate(limit);
                        next = seen.last().map(|s| s.id.to_string());
                    }
                }
                let out: Vec<Value> = seen.iter().map(|s| session_json(&specs, s)).collect();
                let mut r = json_response(StatusCode::OK, &Value::Array(out));
                if let Some(v) = next.and_then(|n| http::HeaderValue::from_str(&n).ok()) {
                    r.headers_mut().insert("x-next-cursor", v);
                }
                r
            }
            Err(r) => r,
        }
    }

    async fn end(&self, who: &Principal, body: &[u8]) -> Response<Vec<u8>> {
        let req: EndRequest = match parse_json(body, "{\"ids\": [..], \"grace_seconds\": N}") {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let ids = match parse_ids(&req.ids) {
            Ok(ids) => ids,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let grace = req.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > MAX_GRACE_SECONDS {
            return error(
                StatusCode::BAD_REQUEST,
                "`grace_seconds` must be at most 86400",
            );
        }
        let now = now_ms();
        let list = match self.list().await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let mut by_id: HashMap<SeatId, SeatRecord> = list.into_iter().map(|s| (s.id, s)).collect();
        // A session missing from the listing is looked up without touching it: it may have
        // ended (409), never existed (404), or started since the listing, when it gets the
        // same permission checks as any other. Validation never ends anything.
        for id in &ids {
            if by_id.contains_key(id) {
                continue;
            }
            match self.app.ledger.lookup(*id, now).await {
                Ok(Lookup::Live(rec)) => {
                    by_id.insert(*id, rec);
                }
                // Whose it was is gone with it: only a super admin, who could see any session,
                // learns that it existed.
                Ok(Lookup::Ended) if who.role == Role::Super => {
                    return error(StatusCode::CONFLICT, &format!("already ended {id}"))
                }
                Ok(Lookup::Ended) => {
                    return error(StatusCode::NOT_FOUND, &format!("unknown session {id}"))
                }
                Ok(Lookup::Unknown) => {
                    return error(StatusCode::NOT_FOUND, &format!("unknown session {id}"))
                }
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}")),
            }
        }
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
                None => return error(StatusCode::NOT_FOUND, &format!("unknown session {id}")),
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
                    if let (Some(s), EndOutcome::Ending { .. }) = (by_id.get(&id), o) {
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

    async fn pause_resume(&self, who: &Principal, body: &[u8], op: PauseOp) -> Response<Vec<u8>> {
        let req: IdsRequest = match parse_json(body, "{\"ids\": [..]}") {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let ids = match parse_ids(&req.ids) {
            Ok(ids) => ids,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let list = match self.list().await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let by_id: HashMap<SeatId, &SeatRecord> = list.iter().map(|s| (s.id, s)).collect();
        for id in &ids {
            match by_id.get(id) {
                Some(s) if may_see(who, s) => {
                    if !may_pause(who, s) {
                        return error(
                            StatusCode::FORBIDDEN,
                            &format!(
                                "session {id}: only its owner, with permission control, may pause or resume it"
                            ),
                        );
                    }
                }
                _ => return error(StatusCode::NOT_FOUND, &format!("unknown session {id}")),
            }
        }
        let now = now_ms();
        let mut out = Vec::new();
        let mut status = StatusCode::OK;
        for id in &ids {
            let was = by_id.get(id).map(|s| s.state);
            let r = match op {
                PauseOp::Pause => self.app.ledger.pause(*id, now).await,
                PauseOp::Resume => self.app.ledger.resume(*id, now).await,
            };
            let (result, code) = match (op, r) {
                (_, Err(e)) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}"))
                }
                (PauseOp::Pause, Ok(PauseOutcome::Done)) => ("paused", StatusCode::OK),
                (PauseOp::Resume, Ok(PauseOutcome::Done)) => ("resumed", StatusCode::OK),
                (PauseOp::Resume, Ok(PauseOutcome::Full)) => ("full", StatusCode::CONFLICT),
                (PauseOp::Pause, Ok(PauseOutcome::WrongState))
                    if was == Some(SeatState::Paused) =>
                {
                    ("already_paused", StatusCode::OK)
                }
                (PauseOp::Resume, Ok(PauseOutcome::WrongState))
                    if matches!(was, Some(SeatState::Active | SeatState::Standby)) =>
                {
                    ("already_active", StatusCode::OK)
                }
                (_, Ok(PauseOutcome::WrongState | PauseOutcome::Full)) => {
                    ("wrong_state", StatusCode::CONFLICT)
                }
                (_, Ok(PauseOutcome::NotFound)) => ("not_found", StatusCode::NOT_FOUND),
            };
            if code != StatusCode::OK && status == StatusCode::OK {
                status = code;
            }
            out.push(json!({"id": id.to_string(), "result": result}));
        }
        let mut body = json!({ "results": out });
        if status != StatusCode::OK {
            body["error"] = json!(match status {
                StatusCode::CONFLICT if op == PauseOp::Resume =>
                    "no seat is free to resume (or the session is ending)",
                StatusCode::CONFLICT => "a session being ended cannot be paused",
                _ => "session ended meanwhile",
            });
        }
        json_response(status, &body)
    }

    async fn usage(&self, who: &Principal) -> Response<Vec<u8>> {
        match self.app.ledger.usage(now_ms()).await {
            Ok(u) => {
                let out: Vec<Value> = u
                    .iter()
                    .filter(|u| may_see_product(who, &u.product))
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

    fn reports(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let q = match reports::parse_query(query, now_ms()) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let mut rows = self.reports.range(q.from, q.to, |p| {
            may_see_product(who, p) && q.product.as_deref().is_none_or(|x| x == p)
        });
        // `own` sees pool-wide counts (like the usage table) but only its own hours.
        if who.role == Role::Own {
            for (_, _, b) in &mut rows {
                b.user_ms.retain(|u, _| u == &who.name);
            }
        }
        match q.format {
            reports::Format::Json => json_response(StatusCode::OK, &reports::to_json(&q, &rows)),
            reports::Format::Csv => {
                let mut r = text(
                    StatusCode::OK,
                    "text/csv; charset=utf-8",
                    reports::to_csv(&rows).into_bytes(),
                );
                if let Ok(v) =
                    http::HeaderValue::from_str("attachment; filename=\"seatgate-report.csv\"")
                {
                    r.headers_mut().insert(http::header::CONTENT_DISPOSITION, v);
                }
                r
            }
        }
    }

    fn me(&self, who: &Principal, via: &Via) -> Response<Vec<u8>> {
        let csrf = match via {
            Via::Cookie { sid } => Some(self.authn.pages.csrf_token(sid)),
            Via::Basic => None,
        };
        let role = match who.role {
            Role::Super => "super",
            Role::Domain => "domain",
            Role::Own => "own",
        };
        let permission = match who.permission {
            Permission::View => "view",
            Permission::Control => "control",
        };
        json_response(
            StatusCode::OK,
            &json!({"name": who.name, "role": role, "permission": permission,
                "products": who.products, "csrf_token": csrf}),
        )
    }

    fn reload(&self, who: &Principal) -> Response<Vec<u8>> {
        if who.role != Role::Super || who.permission != Permission::Control {
            return error(
                StatusCode::FORBIDDEN,
                "reload needs role super with permission control",
            );
        }
        match self.app.reload() {
            Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
            Err(e) => {
                log::error!("reload refused: {e}");
                self.app.audit.record(
                    "config_reload_refused",
                    json!({"by": who.name, "error": e.to_string()}),
                );
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("reload refused, old config kept: {e}"),
                )
            }
        }
    }

    /// `POST /login` from the page's form: a page session cookie, or the form again.
    async fn page_login(&self, s: &mut ServerSession, cfg: &Config) -> Response<Vec<u8>> {
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
        if self.authn.throttled(peer.as_deref(), &user) {
            return page::login(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed logins: wait a minute."),
            );
        }
        let Some(p) = self.authn.verify(cfg, &user, &password) else {
            self.authn.failed(peer.as_deref(), &user);
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

    async fn route(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        let query = s.req_header().uri.query().map(str::to_string);
        let cfg = self.app.config();
        // Open to anyone: health, metrics (bind the listener privately), the page's static
        // files and its login form.
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
                let now = now_ms();
                let up = self.app.ledger.healthy().await;
                let keys: Vec<&PoolKey> = cfg
                    .products
                    .iter()
                    .flat_map(|p| p.pool_keys.iter())
                    .collect();
                let ages: Vec<(&str, &str, Option<u64>)> = keys
                    .iter()
                    .map(|k| {
                        (
                            k.product.as_str(),
                            k.pool.as_str(),
                            self.app.ledger.view_age(k, now),
                        )
                    })
                    .collect();
                self.app.metrics.set_store(up, &ages);
                let usage = self.app.ledger.usage(now).await.unwrap_or_default();
                let body = self.app.metrics.render(&usage).into_bytes();
                return text(StatusCode::OK, "text/plain; version=0.0.4", body);
            }
            (&Method::GET, p) if p.starts_with("/assets/") => {
                return page::asset(p).unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not found"));
            }
            (&Method::GET, "/" | "/usage" | "/login") => {
                let cookie = crate::policy::cookies::request_cookie(
                    &s.req_header().headers,
                    auth::PAGE_COOKIE,
                );
                let logged_in = cookie.is_some_and(|c| self.authn.pages.check(&cfg, c).is_ok());
                return match (path.as_str(), logged_in) {
                    ("/login", false) => page::login(StatusCode::OK, None),
                    ("/login", true) => page::see_other("/", None),
                    (_, true) => page::index(),
                    (_, false) => page::see_other(
                        "/login",
                        cookie
                            .is_some()
                            .then(|| page::clear_cookie(self.app.config().admin.tls.is_some())),
                    ),
                };
            }
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
        if method == Method::POST {
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
        match (&method, path.as_str()) {
            (&Method::POST, "/logout") => {
                if let Via::Cookie { sid } = &via {
                    self.authn.pages.end(sid);
                }
                page::see_other(
                    "/login",
                    Some(page::clear_cookie(self.app.config().admin.tls.is_some())),
                )
            }
            (&Method::GET, "/api/me") => self.me(&who, &via),
            (&Method::GET, "/api/sessions") => self.sessions(&who, query.as_deref()).await,
            (&Method::GET, "/api/usage") => self.usage(&who).await,
            (&Method::GET, "/api/reports") => self.reports(&who, query.as_deref()),
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
            (
                _,
                "/logout"
                | "/api/me"
                | "/api/sessions"
                | "/api/sessions/end"
                | "/api/sessions/pause"
                | "/api/sessions/resume"
                | "/api/usage"
                | "/api/reports"
                | "/api/reload",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, "not found"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::PoolKey;

    /// An active web seat of `user` on `product`'s default pool (also for the submodules' tests).
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
        // Pause is for the owner only, whatever the role.
        assert!(may_pause(&own, &crm_kim) && may_pause(&sup, &crm_kim));
        assert!(!may_pause(&sup, &hr_bob) && !may_pause(&dom, &crm_bob));
        let own_viewer = who(Role::Own, &[], Permission::View);
        assert!(may_see(&own_viewer, &crm_kim) && !may_pause(&own_viewer, &crm_kim));
        // A paused session is listed for its owner only.
        let paused_bob = SeatRecord {
            state: SeatState::Paused,
            ..seat("crm", "bob")
        };
        let paused_kim = SeatRecord {
            state: SeatState::Paused,
            ..seat("crm", "kim")
        };
        assert!(!may_see(&sup, &paused_bob) && may_see(&sup, &paused_kim));
        assert!(may_see_product(&sup, "hr") && may_see_product(&own, "hr"));
        assert!(may_see_product(&dom, "crm") && !may_see_product(&dom, "hr"));
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
            "unknown filter `usr` (user, product, license_type, state, limit, cursor)"
        );
        assert!(parse_filter(Some("state=zombie")).is_err());
        assert!(parse_filter(Some("state=exempt")).is_ok());
        let f = parse_filter(Some("limit=2&cursor=00000000000000ff")).unwrap();
        assert_eq!((f.limit, f.cursor), (Some(2), Some(SeatId(0xff))));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "cursor=zz",
            "cursor=12345678901234567",
        ] {
            assert!(parse_filter(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_bounded_valid_and_deduplicated() {
        let ids = parse_ids(&["a".into(), "0a".into(), "b".into()]).unwrap();
        assert_eq!(ids, vec![SeatId(10), SeatId(11)]);
        assert!(parse_ids(&[]).is_err());
        assert_eq!(
            parse_ids(&["xyz".into()]).unwrap_err(),
            "`xyz` is not a session id"
        );
        assert!(parse_ids(&vec!["1".to_string(); MAX_IDS + 1]).is_err());
    }

    #[test]
    fn expires_at_follows_the_ledger_rule() {
        let cfg = crm_config("admin: { listen: 127.0.0.1:2 }");
        let specs = spec_map(&cfg);
        let mut s = seat("crm", "kim");
        s.last_activity = 60_000;
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(660_000));
        // Paused: idle does not apply, only the lifetime.
        s.state = SeatState::Paused;
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(3_600_000));
        s.state = SeatState::Ending;
        s.ending_at = Some(90_000);
        assert_eq!(session_json(&specs, &s)["expires_at"], rfc3339(90_000));
        s.pool = PoolKey::new("gone", "default");
        assert_eq!(session_json(&specs, &s)["expires_at"], Value::Null);
    }
}
