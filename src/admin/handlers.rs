//! The API's reads and the open endpoints: health, metrics, sessions, usage, reports and the
//! caller. Each filters what the ledger returned through `rbac` and shapes it with `views`.

use super::auth::{Principal, Via};
use super::rbac;
use super::reports;
use super::views::{
    self, me_json, page, parse_filter, session_json, spec_map, ticket_json, usage_json,
};
use super::wire::{error, json_response, store_error, text};
use super::AdminService;
use crate::config::Config;
use crate::domain::{now_ms, PoolKey, SeatRecord};
use http::{Response, StatusCode};
use serde_json::{json, Value};

impl AdminService {
    pub(super) async fn list(&self) -> Result<Vec<SeatRecord>, Response<Vec<u8>>> {
        self.app
            .ledger
            .sessions(now_ms())
            .await
            .map_err(store_error)
    }

    pub(super) async fn healthz(&self) -> Response<Vec<u8>> {
        let ok = self.app.ledger.healthy().await;
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            &json!({"status": if ok {"ok"} else {"unavailable"}, "store": if ok {"ok"} else {"down"},
                "store_detail": self.app.ledger.describe()}),
        )
    }

    pub(super) async fn metrics(&self, cfg: &Config) -> Response<Vec<u8>> {
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
        text(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    pub(super) async fn sessions(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let filter = match parse_filter(query) {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let specs = spec_map(&self.app.config());
        let list = match self.list().await {
            Ok(list) => list,
            Err(r) => return r,
        };
        let p = page(list.iter().filter(|s| rbac::may_see(who, s)), &filter);
        let out: Vec<Value> = p.sessions.iter().map(|s| session_json(&specs, s)).collect();
        let mut r = json_response(StatusCode::OK, &Value::Array(out));
        if let Some(v) = p
            .next
            .and_then(|n| http::HeaderValue::from_str(&n.to_string()).ok())
        {
            r.headers_mut().insert("x-next-cursor", v);
        }
        r
    }

    pub(super) async fn usage(&self, who: &Principal) -> Response<Vec<u8>> {
        match self.app.ledger.usage(now_ms()).await {
            Ok(u) => {
                let out: Vec<Value> = u
                    .iter()
                    .filter(|u| rbac::may_see_product(who, &u.product))
                    .map(usage_json)
                    .collect();
                json_response(StatusCode::OK, &Value::Array(out))
            }
            Err(e) => store_error(e),
        }
    }

    /// `GET /api/queue?product=&pool=`: every line the caller may see, in order (product and
    /// pool, then position).
    pub(super) async fn queue(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let (mut product, mut pool) = (None, None);
        let pairs = match views::filter_pairs(query) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "product" => product = v,
                "pool" | "license_type" => pool = v,
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown filter `{other}` (product, pool)"),
                    )
                }
            }
        }
        match self.app.ledger.queue(now_ms()).await {
            Ok(tickets) => {
                let out: Vec<Value> = tickets
                    .iter()
                    .filter(|t| rbac::may_see_ticket(who, t))
                    .filter(|t| product.as_ref().is_none_or(|p| &t.pool.product == p))
                    .filter(|t| pool.as_ref().is_none_or(|p| &t.pool.pool == p))
                    .map(ticket_json)
                    .collect();
                json_response(StatusCode::OK, &Value::Array(out))
            }
            Err(e) => store_error(e),
        }
    }

    pub(super) fn reports(&self, who: &Principal, query: Option<&str>) -> Response<Vec<u8>> {
        let q = match reports::parse_query(query, now_ms()) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let mut rows = self.reports.range(q.from, q.to, |p| {
            rbac::may_see_product(who, p) && q.product.as_deref().is_none_or(|x| x == p)
        });
        for (_, _, b) in &mut rows {
            b.user_ms.retain(|u, _| rbac::may_see_hours_of(who, u));
        }
        match q.format {
            reports::Format::Json => json_response(StatusCode::OK, &reports::to_json(&q, &rows)),
            reports::Format::Csv => {
                let mut r = text(
                    StatusCode::OK,
                    "text/csv; charset=utf-8",
                    reports::to_csv(&rows).into_bytes(),
                );
                r.headers_mut().insert(
                    http::header::CONTENT_DISPOSITION,
                    http::HeaderValue::from_static("attachment; filename=\"seatgate-report.csv\""),
                );
                r
            }
        }
    }

    pub(super) fn me(&self, who: &Principal, via: &Via) -> Response<Vec<u8>> {
        let csrf = match via {
            Via::Cookie { sid } => Some(self.authn.pages.csrf_token(sid)),
            Via::Basic => None,
        };
        json_response(StatusCode::OK, &me_json(who, csrf))
    }
}
