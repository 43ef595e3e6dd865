//! Self-service from a full-pool denial: the glue around `policy::selfserve`.
//!
//! A browser login of a user who already holds a seat of the pool is not denied blind: the
//! gateway sends the login to the app itself (the app must check the password before anything
//! is offered), and
//! * the app refuses → its answer goes back unchanged, no seat used;
//! * the app accepts and a seat is free by now → admitted as usual;
//! * the app accepts and still no seat → the new session never reaches the browser, it is
//!   logged out at the app in the background, and the denial page lists the user's own
//!   sessions, each with a signed single-use button for `POST …/.seatgate/self-service`.
//!
//! The login goes out-of-band (pingora's HTTP/1 client) rather than through the proxied
//! response, because a bodiless upstream answer (a 302) leaves no body phase in which to put
//! the offer page; this path only runs when the pool is full.

use super::{read_body, Ctx, Gateway, Outcome};
use crate::config::Product;
use crate::ledger::{
    now_ms, Claim, EndOutcome, Full, Lease, LedgerError, Millis, PoolKey, Reservation, SeatLedger,
    SessionKey, Shared,
};
use crate::policy::classify;
use crate::policy::cookies;
use crate::policy::selfserve::{
    self, EndOffer, FullLogin, Hold, Holds, Spend, Spent, TokenError, TokenKey,
};
use crate::responses::{self, Canned, Offer, OwnSession};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::Duration;

/// The whole login exchange with the app, connect to last body byte.
const APP_TIMEOUT: Duration = Duration::from_secs(10);
/// The background logout of a session the browser never got.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Login answers are redirects or short pages; a larger one is not relayed.
const MAX_APP_BODY: usize = 1 << 20;
/// The self-service form carries one token.
const MAX_FORM: usize = 4096;
const MAX_SPENT: usize = 100_000;
const MAX_HOLDS: usize = 100_000;

/// Headers of one hop only; never copied between the two connections.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Where the signing key and the marks of used tokens live, so that a token works on whichever
/// gateway it is posted to: in the store when the store is shared (`store.kind: redis`: one key
/// for every replica, created by the first that needs it; a used token id marked there until
/// the token expires), else in this process.
const SHARED_KEY: &str = "selfserve:key";

/// Per-process state: the signing key, used token ids, held seats, a client for the app.
pub struct SelfService {
    local_key: TokenKey,
    /// The key in use, settled on first use: the store's shared one, or `local_key`.
    key: tokio::sync::OnceCell<TokenKey>,
    spent: Spent,
    holds: Holds,
    connector: Connector,
}

impl Default for SelfService {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfService {
    pub fn new() -> Self {
        SelfService {
            local_key: TokenKey::random(),
            key: tokio::sync::OnceCell::new(),
            spent: Spent::new(MAX_SPENT),
            holds: Holds::new(MAX_HOLDS),
            connector: Connector::new(None),
        }
    }

    /// The signing key. Asked of the store on first use rather than at start: the store's
    /// connection is made inside the proxy's runtime. A store error is not remembered.
    async fn key(&self, ledger: &dyn SeatLedger) -> std::result::Result<TokenKey, LedgerError> {
        self.key
            .get_or_try_init(|| async {
                let mine = hex(&rand::random::<[u8; 32]>());
                match ledger.shared_once(SHARED_KEY, &mine, None).await? {
                    Shared::Local => Ok(self.local_key.clone()),
                    Shared::Value(k) => unhex32(&k).map(TokenKey::from_bytes).ok_or_else(|| {
                        LedgerError::Unavailable(format!(
                            "the shared `{SHARED_KEY}` is not 32 hex bytes"
                        ))
                    }),
                }
            })
            .await
            .cloned()
    }

    /// Marks `offer` used, in the store when it is shared, else here.
    async fn spend(
        &self,
        ledger: &dyn SeatLedger,
        offer: &EndOffer,
        now: Millis,
    ) -> std::result::Result<Spend, LedgerError> {
        let mine = format!("{:x}", rand::random::<u64>());
        let ttl = offer.expires.saturating_sub(now);
        match ledger
            .shared_once(&spent_name(offer), &mine, Some(ttl))
            .await?
        {
            Shared::Local => Ok(self.spent.spend(offer, now)),
            Shared::Value(v) if v == mine => Ok(Spend::First),
            Shared::Value(_) => Ok(Spend::Again),
        }
    }

    /// Gives a token back after the store failed to end its seat, so the button can be retried.
    async fn refund(&self, ledger: &dyn SeatLedger, offer: &EndOffer) {
        self.spent.refund(offer);
        if let Err(e) = ledger.shared_swap(&spent_name(offer), None, 1).await {
            log::warn!("cannot give back a self-service token: {e}");
        }
    }

    /// Remembers a held seat for `user`, in the store when it is shared (so the user's next
    /// login finds it on any replica), else here. A hold it replaces (the user freed a second
    /// seat before coming back) gives its reservation back at once.
    pub(super) async fn put_hold(
        &self,
        ledger: &dyn SeatLedger,
        pool: &PoolKey,
        user: &str,
        hold: Hold,
        now: Millis,
    ) -> std::result::Result<(), String> {
        let value = format!("{:x}:{}", hold.lease, hold.until);
        let ttl = hold.until.saturating_sub(now);
        let replaced = match ledger
            .shared_swap(&hold_name(pool, user), Some(&value), ttl)
            .await
        {
            Ok(Shared::Local) => self.holds.put(pool, user, hold, now).map_err(|_| {
                crate::metrics::limit_reached("self_service_holds");
                "too many seats held".to_string()
            })?,
            Ok(Shared::Value(old)) => old
                .as_deref()
                .and_then(parse_hold)
                .filter(|h| h.until > now),
            Err(e) => return Err(e.to_string()),
        };
        if let Some(old) = replaced {
            ledger.cancel(&held_lease(pool, old)).await;
        }
        Ok(())
    }

    /// The user's unexpired held seat in `pool`, removed: a login is about to use it.
    pub(super) async fn take_hold(
        &self,
        ledger: &dyn SeatLedger,
        pool: &PoolKey,
        user: &str,
        now: Millis,
    ) -> Option<Hold> {
        match ledger.shared_swap(&hold_name(pool, user), None, 1).await {
            Ok(Shared::Local) => self.holds.take(pool, user, now),
            Ok(Shared::Value(old)) => old
                .as_deref()
                .and_then(parse_hold)
                .filter(|h| h.until > now),
            Err(e) => {
                // The login goes on without the hold (and meets the same store error).
                log::warn!("cannot look up a held seat: {e}");
                None
            }
        }
    }

    /// One request to the app on a fresh connection, its answer read whole (bounded).
    async fn call(
        &self,
        mut peer: HttpPeer,
        req: RequestHeader,
        body: Bytes,
    ) -> std::result::Result<(ResponseHeader, Bytes), String> {
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.read_timeout = Some(APP_TIMEOUT);
        peer.options.write_timeout = Some(APP_TIMEOUT);
        let (mut http, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| e.to_string())?;
        http.write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        if !body.is_empty() {
            http.write_body(&body).await.map_err(|e| e.to_string())?;
        }
        http.finish_body().await.map_err(|e| e.to_string())?;
        let mut header = http
            .read_resp_header_parts()
            .await
            .map_err(|e| e.to_string())?;
        while header.status.is_informational() {
            header = http
                .read_resp_header_parts()
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = http.read_body_ref().await.map_err(|e| e.to_string())? {
            if buf.len() + chunk.len() > MAX_APP_BODY {
                return Err(format!("answer larger than {MAX_APP_BODY} bytes"));
            }
            buf.extend_from_slice(chunk);
        }
        http.shutdown().await;
        Ok((*header, buf.freeze()))
    }
}

/// The login as the app would have received it through the proxy: same method, path, headers
/// and body (the caller adds the forwarding headers, as the proxy does).
fn login_request(orig: &RequestHeader, body_len: usize) -> Result<RequestHeader> {
    let mut req = orig.clone();
    req.set_version(http::Version::HTTP_11);
    for h in HOP_BY_HOP {
        req.remove_header(h);
    }
    req.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    req.insert_header(http::header::CONNECTION, "close")?;
    Ok(req)
}

fn set_cookies(h: &ResponseHeader) -> Vec<&str> {
    h.headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

impl Gateway {
    fn builtin_page(p: &Product, client: Option<usize>) -> bool {
        client.is_none_or(|i| p.clients[i].builtin_page)
    }

    /// A pool-full denial: the built-in page rendered with the counts (and the offer, if any);
    /// a configured body as configured.
    pub(super) fn full_denial(
        &self,
        ctx: &Ctx,
        p: &Product,
        client: Option<usize>,
        full: &Full,
        offer: Option<&Offer<'_>>,
    ) -> Canned {
        let base = Self::deny_for(ctx, p, client);
        if Self::builtin_page(p, client) {
            responses::full_page(&base, &p.name, full, offer, now_ms())
        } else {
            base.into_owned()
        }
    }

    async fn own_sessions(
        &self,
        pool: &PoolKey,
        user: &str,
        now: Millis,
    ) -> Vec<crate::ledger::SeatRecord> {
        match self.app.ledger.sessions(now).await {
            Ok(all) => selfserve::own_sessions(&all, pool, user)
                .into_iter()
                .cloned()
                .collect(),
            Err(e) => {
                // Without the list there is nothing to offer: the plain denial is still right.
                log::warn!("cannot list sessions for self-service: {e}");
                Vec::new()
            }
        }
    }

    fn count_self_service(&self, p: &Product, result: &str) {
        self.app
            .metrics
            .self_service
            .with_label_values(&[p.name.as_str(), result])
            .inc();
    }

    /// A login refused by the ledger for lack of a seat. `body` is the login body when the
    /// gateway already read it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn login_full(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        claim: Claim,
        full: Full,
        body: Option<Bytes>,
        new_device: Option<String>,
    ) -> Result<bool> {
        let html = Self::builtin_page(p, client);
        let enabled = p.self_service.enabled;
        let own = match claim.user.as_deref() {
            Some(u) if enabled && html => self.own_sessions(&claim.pool, u, now_ms()).await.len(),
            _ => 0,
        };
        match selfserve::on_full(enabled, html, claim.user.as_deref(), own) {
            FullLogin::Deny => {
                ctx.outcome = Outcome::Denied(full.reason.as_str());
                ctx.login_result = Some("denied");
                self.audit_deny(p, &claim, full.reason.as_str());
                let c = self.full_denial(ctx, p, client, &full, None);
                self.respond(s, &c).await
            }
            FullLogin::VerifyThenOffer => {
                self.verify_then_offer(s, ctx, p, client, claim, body, new_device)
                    .await?;
                Ok(true)
            }
        }
    }

    /// Sends the login to the app; always writes the answer itself.
    #[allow(clippy::too_many_arguments)]
    async fn verify_then_offer(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        claim: Claim,
        body: Option<Bytes>,
        new_device: Option<String>,
    ) -> Result<bool> {
        let body = match body {
            Some(b) => b,
            None => match read_body(s, p.max_login_body).await? {
                Ok(b) => b,
                Err(bad) => return self.bad_login(s, ctx, p, bad).await,
            },
        };
        // The product's own peer: plain or TLS with its SNI and CA, as the proxy connects.
        let Some(peer) = ctx
            .product
            .and_then(|i| ctx.rt.as_ref().and_then(|rt| rt.peer(i)))
        else {
            ctx.outcome = Outcome::Answered;
            ctx.login_result = Some("failed");
            return self.respond(s, &responses::app_unreachable(&p.name)).await;
        };
        let host = s.req_header().headers.get(http::header::HOST).cloned();
        let mut req = login_request(s.req_header(), body.len())?;
        super::set_forwarded(s, &mut req, ctx.rt.as_deref())?;
        let answer =
            tokio::time::timeout(APP_TIMEOUT, self.selfserve.call(peer.clone(), req, body)).await;
        let (mut header, app_body) = match answer {
            Ok(Ok(a)) => a,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => "timed out".into(),
                };
                log::warn!(
                    "product {}: login sent for self-service failed: {why}",
                    p.name
                );
                ctx.outcome = Outcome::Answered;
                ctx.login_result = Some("failed");
                return self.respond(s, &responses::app_unreachable(&p.name)).await;
            }
        };
        let Some(value) = cookies::set_cookie_value(&set_cookies(&header), &p.session.cookie)
        else {
            // Wrong password (or any answer without a session): the app's own words.
            ctx.outcome = Outcome::Forwarded;
            ctx.login_result = Some("failed");
            return relay(s, header, app_body).await;
        };
        // The app accepted. A seat may have come free while it checked.
        let retry = Claim {
            lease_id: rand::random(),
            ..claim.clone()
        };
        let now = now_ms();
        match self.app.ledger.reserve(&retry, now).await {
            Ok(Reservation::Granted(lease)) => {
                let key = SessionKey::new(&p.name, &value);
                match self.app.ledger.commit(&lease, &retry, key, now).await {
                    Ok(id) => {
                        ctx.login_result = Some("admitted");
                        let a = &self.app.audit;
                        a.record(
                            "admit",
                            serde_json::json!({"seat": id.to_string(), "product": p.name, "pool": retry.pool.pool,
                                "user": a.user(retry.user.as_deref()), "client": retry.client,
                                "reused": lease.reuse.is_some()}),
                        );
                        super::set_device_cookie(&mut header, p, new_device.as_deref())?;
                    }
                    Err(e) => {
                        ctx.login_result = Some("failed");
                        log::warn!(
                            "product {}: login succeeded at the app but no seat: {e}",
                            p.name
                        );
                    }
                }
                ctx.outcome = Outcome::Forwarded;
                relay(s, header, app_body).await
            }
            Ok(Reservation::Full(full)) => {
                self.logout_at_app(peer.clone(), p, host, value);
                self.offer(s, ctx, p, client, &claim, &full).await
            }
            Err(e) => {
                let answered = self.store_failed(s, ctx, p, &e, None).await?;
                if answered {
                    self.logout_at_app(peer.clone(), p, host, value);
                    Ok(true)
                } else {
                    // `fail_open`: the login goes through without a seat, as it would have.
                    ctx.login_result = Some("failed");
                    relay(s, header, app_body).await
                }
            }
        }
    }

    /// The denial page with the user's own sessions, each with its own signed choice.
    async fn offer(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        claim: &Claim,
        full: &Full,
    ) -> Result<bool> {
        let now = now_ms();
        let key = match self.selfserve.key(self.app.ledger.as_ref()).await {
            Ok(k) => k,
            Err(e) => {
                // No way to sign an offer: the plain denial.
                log::warn!("product {}: no self-service key: {e}", p.name);
                ctx.outcome = Outcome::Denied(full.reason.as_str());
                ctx.login_result = Some("denied");
                self.audit_deny(p, claim, full.reason.as_str());
                let c = self.full_denial(ctx, p, client, full, None);
                return self.respond(s, &c).await;
            }
        };
        let user = claim.user.clone().unwrap_or_default();
        let ttl = p.self_service.token_ttl.as_millis() as u64;
        let sessions: Vec<OwnSession> = self
            .own_sessions(&claim.pool, &user, now)
            .await
            .into_iter()
            .map(|r| {
                let token = selfserve::sign(
                    &key,
                    &EndOffer {
                        id: rand::random(),
                        product: p.name.clone(),
                        user: user.clone(),
                        seat: r.id,
                        pool: r.pool.pool.clone(),
                        expires: now + ttl,
                    },
                );
                OwnSession {
                    started_at: r.started_at,
                    last_activity: r.last_activity,
                    client: r.client.clone(),
                    this_device: r.device.is_some() && r.device == claim.device,
                    device: r.device,
                    standby: r.state == crate::ledger::SeatState::Standby,
                    token,
                }
            })
            .collect();
        let action = classify::self_service_path(&p.path_prefix);
        let offer = Offer {
            user: &user,
            action: &action,
            valid_secs: ttl / 1000,
            sessions,
        };
        ctx.outcome = Outcome::Denied(full.reason.as_str());
        ctx.login_result = Some("denied");
        let a = &self.app.audit;
        a.record(
            "deny",
            serde_json::json!({"product": p.name, "pool": claim.pool.pool, "user": a.user(claim.user.as_deref()),
                "client": claim.client, "reason": full.reason.as_str(), "self_service_offered": offer.sessions.len()}),
        );
        self.count_self_service(p, "offered");
        let c = self.full_denial(ctx, p, client, full, Some(&offer));
        self.respond(s, &c).await
    }

    /// Logs the session the browser never got out at the app, off the request path.
    fn logout_at_app(&self, peer: HttpPeer, p: &Product, host: Option<HeaderValue>, value: String) {
        let Some(rule) = p.logout.clone() else {
            log::info!(
                "product {}: no logout path configured; the app session of a self-service offer lives until the app drops it",
                p.name
            );
            return;
        };
        let cookie = format!("{}={value}", p.session.cookie);
        let ss = self.selfserve.clone();
        let product = p.name.clone();
        tokio::spawn(async move {
            let method = rule.method.unwrap_or(Method::GET);
            let build = || -> Result<RequestHeader> {
                let mut req = RequestHeader::build(method.clone(), rule.path.as_bytes(), None)?;
                if let Some(h) = host {
                    req.insert_header(http::header::HOST, h)?;
                }
                req.insert_header(http::header::COOKIE, cookie.as_str())?;
                req.insert_header(http::header::CONTENT_LENGTH, "0")?;
                req.insert_header(http::header::CONNECTION, "close")?;
                Ok(req)
            };
            let req = match build() {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("product {product}: cannot build the logout request: {e}");
                    return;
                }
            };
            match tokio::time::timeout(LOGOUT_TIMEOUT, ss.call(peer, req, Bytes::new())).await {
                Ok(Ok((h, _))) => log::debug!(
                    "product {product}: logged out the session of a self-service offer ({})",
                    h.status
                ),
                Ok(Err(e)) => {
                    log::warn!("product {product}: logout of an offered login failed: {e}")
                }
                Err(_) => log::warn!("product {product}: logout of an offered login timed out"),
            }
        });
    }

    /// `POST …/.seatgate/self-service` with `token=…`: ends the chosen own session and sends the
    /// browser back to the login page.
    pub(super) async fn self_service(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
    ) -> Result<bool> {
        ctx.outcome = Outcome::Answered;
        let refuse = |status: StatusCode, why: &str| {
            responses::self_service_refused(status, &p.name, why, &p.login.path)
        };
        if s.req_header().method != Method::POST {
            let c = refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "This address only accepts the buttons of the license page.",
            )
            .header(http::header::ALLOW, HeaderValue::from_static("POST"));
            return self.respond(s, &c).await;
        }
        let body = match read_body(s, MAX_FORM).await? {
            Ok(b) => b,
            Err(_) => {
                let c = refuse(StatusCode::PAYLOAD_TOO_LARGE, "This request is too large.");
                return self.respond(s, &c).await;
            }
        };
        let is_form = s
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            let c = refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "This request must be a form (application/x-www-form-urlencoded).",
            );
            return self.respond(s, &c).await;
        }
        let now = now_ms();
        let ledger = self.app.ledger.as_ref();
        let key = match self.selfserve.key(ledger).await {
            Ok(k) => k,
            Err(e) => {
                log::warn!("product {}: no self-service key: {e}", p.name);
                return self.respond(s, &responses::unavailable()).await;
            }
        };
        let token = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        let valid = token
            .ok_or(TokenError::Malformed)
            .and_then(|t| selfserve::verify(&key, &t, now))
            .and_then(|o| {
                if o.product == p.name {
                    Ok(o)
                } else {
                    Err(TokenError::WrongProduct)
                }
            });
        let checked = match valid {
            Ok(o) => match self.selfserve.spend(ledger, &o, now).await {
                Ok(Spend::First) => Ok(Some(o)),
                Ok(Spend::Again) => Err(TokenError::Spent),
                Ok(Spend::Busy) => {
                    crate::metrics::limit_reached("self_service_tokens");
                    Ok(None)
                }
                Err(e) => {
                    log::warn!("product {}: self-service token store error: {e}", p.name);
                    return self.respond(s, &responses::unavailable()).await;
                }
            },
            Err(e) => Err(e),
        };
        let offer = match checked {
            Ok(Some(o)) => o,
            Ok(None) => {
                let c = refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The license gateway is busy. Please try again in a minute.",
                )
                .header(http::header::RETRY_AFTER, HeaderValue::from_static("60"));
                return self.respond(s, &c).await;
            }
            Err(e) => {
                log::info!("product {}: self-service refused: {}", p.name, e.as_str());
                self.count_self_service(p, e.as_str());
                let c = refuse(e.status(), e.message());
                return self.respond(s, &c).await;
            }
        };
        let result = match self
            .app
            .ledger
            .end(&[offer.seat], 0, &offer.user, now)
            .await
        {
            Ok(v) => match v.first().map(|(_, o)| *o) {
                Some(EndOutcome::Ending { .. }) => "ended",
                _ => "already_gone",
            },
            Err(e) => {
                self.selfserve.refund(ledger, &offer).await;
                log::warn!("product {}: self-service end failed: {e}", p.name);
                return self.respond(s, &responses::unavailable()).await;
            }
        };
        let held = if result == "ended" {
            self.hold_freed_seat(p, &offer, now).await
        } else {
            None
        };
        let a = &self.app.audit;
        a.record(
            "self_service_end",
            serde_json::json!({"product": p.name, "seat": offer.seat.to_string(),
                "user": a.user(Some(&offer.user)), "who": a.user(Some(&offer.user)), "result": result,
                "held_until": held.map(|h| h.until)}),
        );
        self.count_self_service(p, result);
        self.respond(s, &responses::self_service_done(&p.name, &p.login.path))
            .await
    }
}

impl Gateway {
    /// Reserves the seat just freed for the user who freed it, for `self_service.hold`, so their
    /// next login takes it even while others are logging in. Best effort: a login that slipped
    /// in between the end and this reservation, or a store error, leaves the user to compete
    /// for a seat as before.
    async fn hold_freed_seat(&self, p: &Product, offer: &EndOffer, now: Millis) -> Option<Hold> {
        let pool = PoolKey::new(&p.name, &offer.pool);
        let claim = Claim {
            pool: pool.clone(),
            user: Some(offer.user.clone()),
            device: None,
            client: "self_service".into(),
            lease_id: rand::random(),
        };
        let ttl = p.self_service.hold.as_millis() as u64;
        match self.app.ledger.hold(&claim, ttl, now).await {
            Ok(Reservation::Granted(lease)) if lease.reuse.is_none() => {
                let hold = Hold {
                    lease: lease.id,
                    until: now + ttl,
                };
                let ledger = self.app.ledger.as_ref();
                match self
                    .selfserve
                    .put_hold(ledger, &pool, &offer.user, hold, now)
                    .await
                {
                    Ok(()) => Some(hold),
                    Err(e) => {
                        log::warn!("product {}: cannot hold the freed seat: {e}", p.name);
                        ledger.cancel(&lease).await;
                        None
                    }
                }
            }
            // The user still holds a seat this login would take over: nothing to hold.
            Ok(Reservation::Granted(lease)) => {
                self.app.ledger.cancel(&lease).await;
                None
            }
            Ok(Reservation::Full(_)) => {
                log::info!(
                    "product {}: the seat freed by self-service was taken before it could be held",
                    p.name
                );
                None
            }
            Err(e) => {
                log::warn!("product {}: cannot hold the freed seat: {e}", p.name);
                None
            }
        }
    }
}

fn spent_name(offer: &EndOffer) -> String {
    format!("selfserve:spent:{:x}", offer.id)
}

/// Product, pool and user names may hold any character: hashed, they cannot run together.
fn hold_name(pool: &PoolKey, user: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&pool.product, &pool.pool, user] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("selfserve:hold:{}", hex(&h.finalize()[..16]))
}

/// `lease:until` as `put_hold` writes it; anything else is no hold.
fn parse_hold(v: &str) -> Option<Hold> {
    let (lease, until) = v.split_once(':')?;
    Some(Hold {
        lease: u64::from_str_radix(lease, 16).ok()?,
        until: until.parse().ok()?,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

/// The lease of a hold, as `cancel` wants it.
fn held_lease(pool: &PoolKey, h: Hold) -> Lease {
    Lease {
        id: h.lease,
        pool: pool.clone(),
        reuse: None,
        overflow: false,
    }
}

/// Writes the app's answer as the app gave it (hop-by-hop headers aside).
async fn relay(s: &mut Session, mut header: ResponseHeader, body: Bytes) -> Result<bool> {
    for h in HOP_BY_HOP {
        header.remove_header(h);
    }
    let bodiless = matches!(header.status.as_u16(), 204 | 304);
    if bodiless {
        header.remove_header(&http::header::CONTENT_LENGTH);
    } else {
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    let end = bodiless || body.is_empty();
    s.write_response_header(Box::new(header), end).await?;
    if !end {
        s.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_names_and_values_round_trip() {
        let k: [u8; 32] = rand::random();
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("abc"), None);
        assert_eq!(unhex32(&"zz".repeat(32)), None);
        let h = Hold {
            lease: 0xdead_beef,
            until: 1_700_000_000_123,
        };
        assert_eq!(parse_hold(&format!("{:x}:{}", h.lease, h.until)), Some(h));
        for bad in ["", "x:1", "12", "12:", "12:y"] {
            assert_eq!(parse_hold(bad), None, "{bad}");
        }
        // Names that would run together as plain text stay apart.
        let a = hold_name(&PoolKey::new("a:b", "c"), "u");
        let b = hold_name(&PoolKey::new("a", "b:c"), "u");
        assert_ne!(a, b);
        assert_eq!(a, hold_name(&PoolKey::new("a:b", "c"), "u"));
    }
}
