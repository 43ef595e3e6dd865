//! The pingora `ProxyHttp` impl: request → policy → ledger → response. Only glue.
//!
//! Each phase extracts plain data from the `Session`, asks `policy` and the ledger, and maps
//! the answer to a canned response or to forwarding. What happened is kept in [`Ctx`] and turned
//! into metrics in one place, `logging`. The self-service offer of a full-pool login lives in
//! `selfserve`.

mod selfserve;
pub use selfserve::SelfService;

use crate::app::{pool_for, pool_key, App, Runtime};
use crate::config::Product;
use crate::config::{Mode, SeatsPer, StoreErrorPolicy};
use crate::ledger::{
    now_ms, Claim, Gone, Lease, LedgerError, Lookup, Millis, ReleaseReason, Reservation, SeatState,
    SessionKey, Touch,
};
use crate::metrics::ProductSeries;
use crate::policy::activity::{self, Counts};
use crate::policy::classify::{self, Action, BadLogin, RequestFacts};
use crate::policy::cookies::{self, CookieWord, RequestSession};
use crate::policy::forwarded;
use crate::policy::hostile::{self, Limits};
use crate::policy::seat::{self, Stale};
use crate::policy::selfserve::Hold;
use crate::presence::{self, Injector, Verdict};
use crate::responses::{self, Canned};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    pub app: Arc<App>,
    pub selfserve: Arc<SelfService>,
}

/// A login waiting for the app's answer.
pub struct PendingLogin {
    claim: Claim,
    new_device: Option<String>,
    take: Take,
}

/// What a login takes once the app accepts it (sets its session cookie).
enum Take {
    /// A reserved seat. `held`: the login took a seat held for its user, which a failed login
    /// gives back.
    Seat { lease: Lease, held: Option<Hold> },
    /// An exempt or named user: a session the gateway knows but never counts.
    Uncounted(SeatState),
    /// The browser's session already holds a seat for this user: the seat moves to the
    /// cookie the app sets now, so a re-login never takes a second seat nor fails at a full
    /// pool.
    Relogin(SessionKey),
}

/// The denial reason of a failed check: counted through the pre-resolved series.
const CHECK_FULL: &str = "check_full";

/// What the gateway did with the request, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Forwarded,
    Denied(&'static str),
    CheckPassed,
    Answered,
}

pub struct Ctx {
    started: Instant,
    rt: Option<Arc<Runtime>>,
    product: Option<usize>,
    /// Index into the product's `clients`; `None` is the built-in default kind.
    client: Option<usize>,
    action: Option<Action>,
    // Boxed: the context lives inside pingora's per-request future, which is moved whole, so
    // rarely used state should not make every request's context larger.
    login: Option<Box<PendingLogin>>,
    login_result: Option<&'static str>,
    outcome: Outcome,
    /// The seat is being ended by an admin at this time: tell the user.
    ending_at: Option<Millis>,
    /// The request's session holds a seat (or its login just took one): its pages get the
    /// heartbeat script when the product has presence.
    holds_seat: bool,
    /// Splices the heartbeat script into this response's HTML body.
    inject: Option<Box<Injector>>,
    /// The request's session cookie when it holds a seat (or an uncounted session), or is
    /// a configured logout: the app's answer may delete or rotate it.
    session: Option<SessionKey>,
    /// A configured logout: the seat goes only if the app accepts it.
    logout: bool,
    /// `expired: adopt`: a seat is taken only once the app has accepted the cookie.
    adopt: Option<Box<Claim>>,
    /// The gateway read the request body itself (and answered `Expect: 100-continue`).
    body_read: bool,
    /// The app's answer is replaced by this body (its header was replaced already).
    replace_body: Option<Bytes>,
    /// Keeps an upgraded connection's seat touched while the socket is open.
    upgraded: Option<KeepTouched>,
    /// The seat's request counts as activity only if the response's media type is not
    /// ignored (`session.activity.ignore[].content_type`): touched again once it is known.
    activity_by_response: bool,
    /// The seat's request was not activity (`session.activity.ignore`, `idle_by: input`).
    ignored: bool,
    /// The request's session cookie as classification hashed it (the access log's seat).
    request_key: Option<SessionKey>,
}

/// A task touching a seat while its WebSocket (or other upgraded) connection is open: a
/// long-lived socket is activity even when no request comes. Stops when dropped.
pub struct KeepTouched(tokio::task::JoinHandle<()>);

impl Drop for KeepTouched {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Ctx {
    fn product<'a>(&self, rt: &'a Runtime) -> Option<&'a Arc<Product>> {
        self.product.and_then(|i| rt.config.products.get(i))
    }

    /// This request's product, from the config snapshot the request started with.
    fn product_arc(&self) -> Option<Arc<Product>> {
        let rt = self.rt.as_ref()?;
        self.product(rt).cloned()
    }

    /// This request's product's pre-resolved metric series.
    fn series(&self) -> Option<&ProductSeries> {
        let rt = self.rt.as_ref()?;
        rt.series.get(self.product?)
    }

    fn client_label<'a>(&self, p: &'a Product) -> &'a str {
        self.client
            .and_then(|i| p.clients.get(i))
            .map_or("default", |c| c.kind.as_str())
    }
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        Gateway {
            app,
            selfserve: Arc::new(SelfService::new()),
        }
    }

    async fn respond(&self, s: &mut Session, c: &Canned) -> Result<bool> {
        // A request whose body we did not read cannot share its connection with the next one;
        // bodiless requests (checks are GETs) keep their connection, which a check storm needs.
        // (A request without Content-Length or Transfer-Encoding has an empty body: done.)
        if !s.is_body_done() {
            s.set_keepalive(None);
        }
        c.send(s).await?;
        Ok(true)
    }

    /// The pool-full answer of `client`, prebuilt with the request's config snapshot.
    fn deny_for<'a>(ctx: &'a Ctx, p: &Product, client: Option<usize>) -> Cow<'a, Canned> {
        match ctx.rt.as_ref().and_then(|rt| rt.denials.get(ctx.product?)) {
            Some(d) => Cow::Borrowed(d.get(client)),
            // Not reached: a denial comes after request_filter set the snapshot and product.
            None => Cow::Owned(responses::Denials::new(p).get(client).clone()),
        }
    }

    /// Maps a store failure to the product's `on_store_error` policy: `Ok(true)` when an
    /// answer was written, `Ok(false)` to let the request through without a seat. `known` is
    /// the gateway's last view for `last_known` (session held / a seat free); without one,
    /// `last_known` fails closed.
    async fn store_failed(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        e: &LedgerError,
        known: Option<bool>,
    ) -> Result<bool> {
        let policy = match p.on_store_error {
            StoreErrorPolicy::FailClosed => "fail_closed",
            StoreErrorPolicy::FailOpen => "fail_open",
            StoreErrorPolicy::LastKnown => "last_known",
        };
        self.app
            .metrics
            .store_errors
            .with_label_values(&[p.name.as_str(), policy])
            .inc();
        log::warn!("product {}: seat store error ({policy}): {e}", p.name);
        match p.on_store_error {
            StoreErrorPolicy::FailClosed => {
                ctx.outcome = Outcome::Denied("store_error");
                self.respond(s, &responses::unavailable()).await
            }
            StoreErrorPolicy::FailOpen => Ok(false),
            StoreErrorPolicy::LastKnown if known == Some(true) => Ok(false),
            StoreErrorPolicy::LastKnown => {
                ctx.outcome = Outcome::Denied("store_error");
                self.respond(s, &responses::unavailable()).await
            }
        }
    }

    async fn login(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        key: Option<SessionKey>,
    ) -> Result<bool> {
        let mut body = Bytes::new();
        let read = classify::needs_body(&p.login.user);
        if read {
            ctx.body_read = true;
            match read_body(s, p.max_login_body).await? {
                Ok(b) => body = b,
                Err(bad) => return self.bad_login(s, ctx, p, bad).await,
            }
        }
        let user = match classify::login_user(&p.login.user, &s.req_header().headers, &body) {
            Ok(u) => u,
            Err(bad) => return self.bad_login(s, ctx, p, bad).await,
        };
        let uncounted = user.as_deref().and_then(|u| {
            if p.exempt_users.contains(u) {
                Some(SeatState::Exempt)
            } else if p.named_users.contains(u) {
                Some(SeatState::Named)
            } else {
                None
            }
        });
        let (device, new_device) = match p.seats_per {
            SeatsPer::UserDevice => {
                match cookies::request_cookie(&s.req_header().headers, &p.session.device_cookie)
                    .filter(|d| cookies::valid_device(d))
                {
                    Some(d) => (Some(d.to_string()), None),
                    None => {
                        let d = cookies::new_device_id();
                        (Some(d.clone()), Some(d))
                    }
                }
            }
            _ => (None, None),
        };
        let pool = pool_for(p, user.as_deref(), &s.req_header().headers);
        let now = now_ms();
        let pool = pool_key(p, pool).clone();
        // A re-login moves the browser's seat; an exempt or named user takes none. Either way
        // nothing is reserved: the app's answer decides.
        let relogin = match key {
            Some(old) if self.holds_for(&old, user.as_deref(), now).await => {
                Some(Take::Relogin(old))
            }
            _ => None,
        };
        if let Some(take) = relogin.or(uncounted.map(Take::Uncounted)) {
            ctx.login = Some(Box::new(PendingLogin {
                claim: Claim {
                    pool,
                    user,
                    device,
                    client: ctx.client_label(p).to_string(),
                    lease_id: 0,
                },
                new_device,
                take,
            }));
            return Ok(false);
        }
        // A seat this user freed by self-service waits for them under its own lease id (with
        // Redis, one more store call per login while self-service is on).
        let held = match user.as_deref() {
            Some(u) if p.self_service.enabled => {
                self.selfserve
                    .take_hold(self.app.ledger.as_ref(), &pool, u, now)
                    .await
            }
            _ => None,
        };
        let claim = Claim {
            pool,
            user,
            device,
            client: ctx.client_label(p).to_string(),
            lease_id: held.map_or_else(rand::random, |h| h.lease),
        };
        match self.app.ledger.reserve(&claim, now).await {
            Ok(Reservation::Granted(lease)) => {
                ctx.login = Some(Box::new(PendingLogin {
                    claim,
                    new_device,
                    take: Take::Seat { lease, held },
                }));
                Ok(false)
            }
            Ok(Reservation::Full(full)) => {
                let body = read.then_some(body);
                self.login_full(s, ctx, p, client, claim, full, body, new_device)
                    .await
            }
            Err(e) => {
                let free = self
                    .app
                    .ledger
                    .available(&claim.pool, now_ms())
                    .map(|n| n > 0);
                self.store_failed(s, ctx, p, &e, free).await
            }
        }
    }

    /// A request refused before classification (framing two parsers could read differently,
    /// sizes past the bounds): answered and the connection closed, since what follows on it
    /// cannot be trusted to start where we think it does.
    async fn refuse(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        reason: &'static str,
        status: StatusCode,
        why: &str,
    ) -> Result<bool> {
        log::info!("refused request: {why}");
        self.app
            .metrics
            .bad_requests
            .with_label_values(&[reason])
            .inc();
        ctx.outcome = Outcome::Denied("bad_request");
        s.set_keepalive(None);
        let c = responses::bad_request(status, why).header_str(http::header::CONNECTION, "close");
        c.send(s).await?;
        Ok(true)
    }

    async fn bad_login(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        bad: BadLogin,
    ) -> Result<bool> {
        log::info!(
            "product {}: refused malformed login: {}",
            p.name,
            bad.message()
        );
        ctx.outcome = Outcome::Denied("bad_request");
        ctx.login_result = Some("bad_request");
        let reason = match bad {
            BadLogin::AmbiguousUser(_) => "ambiguous_user",
            _ => "bad_login",
        };
        self.app
            .metrics
            .bad_requests
            .with_label_values(&[reason])
            .inc();
        self.respond(s, &responses::bad_request(bad.status(), &bad.message()))
            .await
    }

    fn audit_deny(&self, p: &Product, claim: &Claim, reason: &str) {
        let a = &self.app.audit;
        a.record(
            "deny",
            serde_json::json!({"product": p.name, "pool": claim.pool.pool, "user": a.user(claim.user.as_deref()), "client": claim.client, "reason": reason}),
        );
    }

    /// Whether `session` holds a seat (or an uncounted session) of `user`, or of no one in
    /// particular: then a login from that browser is a re-login and moves that seat. Any
    /// doubt (store error, another user's seat) makes it an ordinary login.
    async fn holds_for(&self, session: &SessionKey, user: Option<&str>, now: Millis) -> bool {
        let Ok(Touch::Held { id, .. }) = self.app.ledger.touch(session, now).await else {
            return false;
        };
        match self.app.ledger.lookup(id, now).await {
            Ok(Lookup::Live(rec)) => rec.user.is_none() || rec.user.as_deref() == user,
            _ => false,
        }
    }

    async fn session(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        key: SessionKey,
        counts: Counts,
    ) -> Result<bool> {
        let now = now_ms();
        let activity = counts == Counts::Activity;
        let gone = match self.app.ledger.touch_as(&key, activity, now).await {
            Ok(Touch::Held { ending_at, .. }) => {
                match counts {
                    Counts::Activity => {}
                    Counts::Ignored => {
                        ctx.ignored = true;
                        self.count_ignored(p);
                    }
                    Counts::ByResponse => ctx.activity_by_response = true,
                }
                ctx.ending_at = ending_at;
                ctx.holds_seat = true;
                ctx.session = Some(key);
                return Ok(false);
            }
            Ok(Touch::Gone(g)) => g,
            Err(e) => {
                return self
                    .store_failed(s, ctx, p, &e, self.app.ledger.last_known(&key))
                    .await
            }
        };
        match seat::on_stale(p.session.expired, gone) {
            Stale::RedirectToLogin => {
                ctx.outcome = Outcome::Denied("expired");
                let r = responses::expired_redirect(
                    &p.login.path,
                    &p.session.cookie,
                    &p.session.cookie_path,
                    seat::notice(gone),
                );
                self.respond(s, &r).await
            }
            Stale::Adopt => self.adopt(s, ctx, p, client, key, gone).await,
        }
    }

    /// `expired: adopt`: a session the app still honours takes a free seat if there is one.
    /// Nothing is reserved before the app has answered: a cookie the app does not know (junk,
    /// forged, long expired) must never hold a seat, not even for the length of a request.
    /// With no seat free the request is denied before it reaches the app.
    async fn adopt(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
        key: SessionKey,
        gone: Gone,
    ) -> Result<bool> {
        let pool = pool_for(p, None, &s.req_header().headers);
        let claim = Claim {
            pool: pool_key(p, pool).clone(),
            user: None,
            device: None,
            client: ctx.client_label(p).to_string(),
            // One lease id per cookie: concurrent requests of one browser adopting the same
            // cookie find the same reservation (reserve is idempotent by lease id, on every
            // replica) instead of racing for the last seat against themselves.
            lease_id: u64::from_le_bytes(key.0[..8].try_into().unwrap_or_default()) | 1,
        };
        match self.app.ledger.available(&claim.pool, now_ms()) {
            None => {
                let e = LedgerError::Unavailable("no current view of the pool".into());
                return self.store_failed(s, ctx, p, &e, None).await;
            }
            Some(0) => {
                let full = self.full_now(p, &claim);
                ctx.outcome = Outcome::Denied(full.reason.as_str());
                self.audit_deny(p, &claim, full.reason.as_str());
                let c = self.full_denial(ctx, p, client, &full, None);
                return self.respond(s, &c).await;
            }
            Some(_) => {}
        }
        log::debug!(
            "product {}: {key:?} ({}) is adopted if the app accepts it",
            p.name,
            seat::notice(gone)
        );
        ctx.session = Some(key);
        ctx.adopt = Some(Box::new(claim));
        Ok(false)
    }

    /// The pool's full answer as the gateway sees it without a reservation.
    fn full_now(&self, p: &Product, claim: &Claim) -> crate::ledger::Full {
        let capacity = p
            .pools
            .iter()
            .zip(&p.pool_keys)
            .find(|(_, k)| **k == claim.pool)
            .map_or(0, |(pool, _)| pool.capacity(now_ms()));
        crate::ledger::Full {
            in_use: capacity,
            capacity,
            reason: crate::ledger::FullReason::Pool,
        }
    }

    async fn check(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        client: Option<usize>,
    ) -> Result<bool> {
        let pool = pool_key(p, pool_for(p, None, &s.req_header().headers));
        let Some(free) = self.app.ledger.available(pool, now_ms()) else {
            // No current view of the pool (store down past the stale bound): a check must
            // not pass on counts that may no longer be true.
            let e = LedgerError::Unavailable("no current view of the pool".into());
            return self.store_failed(s, ctx, p, &e, None).await;
        };
        let pass = free > 0;
        if let Some(series) = ctx.series() {
            series.check(client, pass);
        }
        if pass {
            ctx.outcome = Outcome::CheckPassed;
            Ok(false)
        } else {
            ctx.outcome = Outcome::Denied(CHECK_FULL);
            self.respond(s, &Self::deny_for(ctx, p, client)).await
        }
    }

    /// A presence ping. Unknown or ended sessions get 410 and nothing is touched; a flood
    /// from one session gets 429 before any store call; a `pagehide` hint is only counted (a
    /// closing tab must not extend its own presence). A store error is 503, not 410, so the
    /// script keeps beating through a store outage.
    async fn heartbeat(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        key: Option<SessionKey>,
    ) -> Result<bool> {
        ctx.outcome = Outcome::Answered;
        let now = now_ms();
        let period = presence::beat_period(p.session.presence_timeout);
        let limiter = &self.app.heartbeat_limiter;
        let hint = presence::is_hide_hint(s.req_header().uri.query());
        // Input counts only where the product asks for it (`idle_by: input`, the warning's
        // button); for an unknown or ended session it changes nothing (410 as ever).
        let input =
            activity::takes_input(&p.session) && presence::is_input(s.req_header().uri.query());
        let (result, c) = match key {
            None => ("gone", responses::gone("no seat for this session")),
            Some(_) if hint => ("hide", responses::no_content()),
            Some(k) => match limiter.check(&k, period, now) {
                Verdict::Limited { retry_after_ms } => (
                    "limited",
                    responses::too_many("too many heartbeats", retry_after_ms.div_ceil(1000)),
                ),
                Verdict::Allowed => match self.app.ledger.beat(&k, input, now).await {
                    Ok(Some(last_activity)) => {
                        limiter.record(k, period, now);
                        ("ok", self.idle_warning(p, k, last_activity, now))
                    }
                    Ok(None) => {
                        limiter.forget(&k);
                        ("gone", responses::gone("no seat for this session"))
                    }
                    Err(e) => {
                        log::warn!("product {}: heartbeat store error: {e}", p.name);
                        ("error", responses::unavailable())
                    }
                },
            },
        };
        self.app
            .metrics
            .heartbeats
            .with_label_values(&[p.name.as_str(), result])
            .inc();
        self.respond(s, &c).await
    }

    /// Sets up the splice for this response if it is a page of a seat holder: the presence
    /// script when the product has presence, and the administrator's end notice while the
    /// session is in its grace period.
    fn plan_injection(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(rt) = ctx.rt.as_ref() else {
            return Ok(());
        };
        let script = ctx
            .product
            .and_then(|i| rt.scripts.get(i))
            .and_then(Option::as_ref);
        let notice = ctx
            .ending_at
            .map(|at| presence::ending_notice(at.saturating_sub(now_ms()).div_ceil(1000)));
        if script.is_none() && notice.is_none() {
            return Ok(());
        }
        let req = s.req_header();
        let Some(plan) = presence::plan(
            script.map(|s| s.csp_hash.as_str()),
            &req.method,
            &req.headers,
            resp.status,
            &resp.headers,
        ) else {
            return Ok(());
        };
        let chunked = req.version == http::Version::HTTP_11;
        plan.apply(resp, chunked)?;
        if !chunked {
            // A close-delimited body ends the connection.
            s.set_keepalive(None);
        }
        let tag = match (notice, script) {
            (Some(n), Some(sc)) => {
                let t = sc.tag(plan.csp.nonce.as_deref());
                let mut both = Vec::with_capacity(n.len() + t.len());
                both.extend_from_slice(&n);
                both.extend_from_slice(&t);
                Bytes::from(both)
            }
            (Some(n), None) => n,
            (None, Some(sc)) => sc.tag(plan.csp.nonce.as_deref()),
            (None, None) => return Ok(()),
        };
        ctx.inject = Some(Box::new(Injector::new(plan.encoding, tag)));
        Ok(())
    }
}

/// Sets the request's `X-Forwarded-For` and `-Proto` for the app (`policy::forwarded`): the
/// proxied request and the self-service's own login call alike.
fn set_forwarded(s: &Session, req: &mut RequestHeader, rt: Option<&Runtime>) -> Result<()> {
    // Header names as values, not strings: pingora would parse a `&str` name every time.
    static XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    static XFP: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
    let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
    let trusted = rt.map_or(&[][..], |rt| rt.config.trusted_proxies.as_slice());
    let header = |n: &http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
    let (xff, proto) = forwarded::forwarded(peer, trusted, header(&XFF), header(&XFP), tls);
    match xff {
        Some(v) => req.insert_header(XFF.clone(), v)?,
        None => {
            req.remove_header(&XFF);
        }
    }
    req.insert_header(XFP.clone(), http::HeaderValue::from_static(proto))?;
    Ok(())
}

/// Gives a browser that came without one the device cookie of `seats_per: user_device`.
fn set_device_cookie(resp: &mut ResponseHeader, p: &Product, device: Option<&str>) -> Result<()> {
    if let Some(d) = device {
        resp.append_header(
            http::header::SET_COOKIE,
            cookies::device_set_cookie(&p.session.device_cookie, d),
        )?;
    }
    Ok(())
}

/// The app's last word on its session cookie in this response.
fn app_word_on(resp: &ResponseHeader, cookie: &str) -> Option<CookieWord> {
    let set: Vec<&str> = resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if set.is_empty() {
        return None;
    }
    let now = (now_ms() / 1000) as i64;
    cookies::set_cookie_word(&set, cookie, now)
}

/// Reads the whole (small) login body, keeping it for pingora to send upstream.
async fn read_body(s: &mut Session, limit: usize) -> Result<std::result::Result<Bytes, BadLogin>> {
    if let Some(len) = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Ok(Err(BadLogin::TooLarge { limit }));
        }
    }
    if !s.is_body_done()
        && s.req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        // The client holds its body back until it hears from us (curl for a second).
        s.write_continue_response().await?;
    }
    s.enable_retry_buffering();
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.read_request_body().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Ok(Err(BadLogin::TooLarge { limit }));
        }
    }
    Ok(Ok(buf.freeze()))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No downstream modules: pingora's default is a response-compression module switched
    /// off, which still costs three allocations per request. The gateway never compresses;
    /// the app's own encoding passes through untouched.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            rt: None,
            product: None,
            client: None,
            action: None,
            login: None,
            login_result: None,
            outcome: Outcome::Forwarded,
            ending_at: None,
            holds_seat: false,
            inject: None,
            session: None,
            logout: false,
            adopt: None,
            body_read: false,
            replace_body: None,
            upgraded: None,
            activity_by_response: false,
            ignored: false,
            request_key: None,
        }
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.app.runtime();
        ctx.rt = Some(rt.clone());
        // RFC 9112 9.3.2: pipelined requests are answered in order. Off, pingora answers the
        // first and drops the connection with the rest unanswered.
        s.set_pipelining_enabled(true);
        // Slow clients: each read of the body, and the wait for the next request.
        let t = rt.config.timeouts;
        s.set_read_timeout(Some(t.body));
        // Only where the client asked for a persistent connection (pingora has read its
        // `Connection` and version already); left alone, HTTP/1.1 would wait forever.
        if s.as_http1()
            .is_some_and(|h| h.get_keepalive_timeout().is_some())
        {
            s.set_keepalive(Some(t.idle.as_secs().max(1)));
        }
        let req = s.req_header();
        let uri_len = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let raw = s.as_http1().map(|h| h.get_headers_raw_bytes());
        let req = s.req_header();
        if let Err(bad) = hostile::inspect(
            req.version,
            uri_len,
            &req.headers,
            raw.as_deref(),
            Limits::default(),
        ) {
            return self
                .refuse(s, ctx, bad.reason(), bad.status(), bad.message())
                .await;
        }
        let path = classify::normalize_path(req.uri.path());
        let facts = RequestFacts::new(&req.method, &req.uri, &req.headers).with_path(&path);
        let Some(pi) = classify::product_for(&rt.config, &facts) else {
            ctx.outcome = Outcome::Denied("no_product");
            return self
                .respond(
                    s,
                    &Canned::text(StatusCode::NOT_FOUND, "No application is served here."),
                )
                .await;
        };
        let p = rt.config.products[pi].clone();
        ctx.product = Some(pi);
        let client = classify::client_for(&p, &facts);
        let mode = client.map_or(Mode::Hold, |i| p.clients[i].mode);
        ctx.client = client;
        let (key, ambiguous) = match cookies::request_session(&req.headers, &p.session.cookie) {
            RequestSession::None => (None, false),
            RequestSession::One(c) => (Some(SessionKey::new(&p.name, c)), false),
            RequestSession::Ambiguous => (None, true),
        };
        let action = classify::action(
            &p,
            mode,
            &facts,
            key.is_some() || ambiguous,
            classify::has_credentials(&req.headers),
        );
        ctx.action = Some(action);
        ctx.request_key = key;
        if ambiguous && matches!(action, Action::Session | Action::Logout | Action::Heartbeat) {
            // Two different session values: whichever the app reads, a seat charged to the
            // other would let a second app session ride on it.
            ctx.outcome = Outcome::Denied("bad_request");
            self.app
                .metrics
                .bad_requests
                .with_label_values(&["ambiguous_session"])
                .inc();
            let r = responses::ambiguous_session(&p.session.cookie, &p.session.cookie_path);
            return self.respond(s, &r).await;
        }
        match action {
            Action::Pass => {
                // The app's word counts on any page, its login page included: deleting the
                // cookie there releases whatever seat it held (nothing is asked before).
                ctx.session = key;
                Ok(false)
            }
            // Boxed: an async fn's future is as large as its largest branch, and pingora
            // copies this one whole on every request; the login and self-service flows (body
            // reads, `100 Continue`, calls to the app) are kilobytes that checks and
            // proxied requests must not pay for.
            Action::Heartbeat => Box::pin(self.heartbeat(s, ctx, &p, key)).await,
            Action::SelfService => Box::pin(self.self_service(s, ctx, &p)).await,
            Action::Check => self.check(s, ctx, &p, client).await,
            Action::Login => Box::pin(self.login(s, ctx, &p, client, key)).await,
            Action::Logout => {
                // Released once the app accepts the logout (`app_word`): an app that refuses
                // it (a 405 for the wrong method, a CSRF failure) still has the user logged in.
                ctx.session = key;
                ctx.logout = true;
                Ok(false)
            }
            Action::Session => match key {
                Some(k) => {
                    // Decided from the facts classification already built.
                    let counts = activity::counts(&p.session, &facts, None);
                    Box::pin(self.session(s, ctx, &p, client, k, counts)).await
                }
                None => Ok(false),
            },
        }
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let rt = ctx.rt.clone().unwrap_or_else(|| self.app.runtime());
        // Plain or TLS (SNI, CA) as the product's `upstream` says; built by `Runtime::peer`.
        let peer: HttpPeer = ctx.product.and_then(|i| rt.peer(i)).ok_or_else(|| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::InternalError,
                "no product for request",
            )
        })?;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.body_read {
            // The client has had its `100 Continue` from us and the body is buffered: the app
            // must not send a second one.
            up.remove_header(&http::header::EXPECT);
        }
        set_forwarded(s, up, ctx.rt.as_deref())
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue, 103 Early Hints: the app's real answer is still to come.
            return Ok(());
        }
        if let Some(at) = ctx.ending_at {
            let secs = at.saturating_sub(now_ms()).div_ceil(1000);
            resp.insert_header("x-seatgate-notice", format!("session-ending; in={secs}"))?;
        }
        if ctx.login.is_some() {
            Box::pin(self.commit_login(resp, ctx)).await?;
        } else if ctx.session.is_some() {
            self.app_word(resp, ctx).await?;
        }
        if ctx.activity_by_response {
            self.activity_by_response(s, resp, ctx).await;
        }
        if resp.status == StatusCode::SWITCHING_PROTOCOLS {
            self.keep_touched(ctx);
        } else if ctx.holds_seat {
            self.plan_injection(s, resp, ctx)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(b) = ctx.replace_body.as_mut() {
            *body = (!b.is_empty()).then(|| std::mem::take(b));
            return Ok(None);
        }
        let Some(inj) = ctx.inject.as_mut() else {
            return Ok(None);
        };
        let input = body.take().unwrap_or_default();
        match inj.feed(&input, end) {
            Ok(out) => *body = Some(out),
            Err(e) => {
                // Headers are gone already: all that is left is to cut the response short.
                ctx.inject = None;
                return Err(pingora_error::Error::because(
                    pingora_error::ErrorType::InternalError,
                    "presence script injection",
                    e,
                ));
            }
        }
        Ok(None)
    }

    async fn logging(&self, s: &mut Session, e: Option<&pingora_error::Error>, ctx: &mut Ctx) {
        // The upgraded connection is over: its seat is left to the ordinary rules again.
        ctx.upgraded = None;
        self.log_request(e, ctx).await;
        // The access log line (`access_log`): plain facts only, never a cookie value.
        if self.app.access_log.enabled() {
            let rt = ctx.rt.clone();
            let p = rt.as_deref().and_then(|rt| ctx.product(rt));
            let (req, resp) = (s.req_header(), s.response_written());
            // The session: the request's cookie, or the one a login's answer just set.
            let seat = p.and_then(|p| {
                let key =
                    ctx.request_key
                        .or_else(|| match app_word_on(resp?, &p.session.cookie)? {
                            CookieWord::Set(v) => Some(SessionKey::new(&p.name, &v)),
                            CookieWord::Deleted => None,
                        })?;
                Some(key.hex()[..12].to_string())
            });
            let user = match (p, ctx.action) {
                (Some(p), Some(Action::Login)) => {
                    let body = s.get_retry_buffer().unwrap_or_default();
                    classify::login_user(&p.login.user, &req.headers, &body)
                        .ok()
                        .flatten()
                }
                _ => None,
            };
            // As the audit log writes it: a keyed hash with `audit.hash_users`.
            let user = user.and_then(|u| self.app.audit.user(Some(&u)).as_str().map(str::to_owned));
            let peer = s.client_addr().map(|a| a.to_string());
            self.app.access_log.write(&crate::access_log::Request {
                product: p.map(|p| p.name.as_str()),
                client: p.map_or("default", |p| ctx.client_label(p)),
                action: ctx.action.unwrap_or(Action::Pass).label(),
                method: req.method.as_str(),
                path: crate::access_log::log_path(req.uri.path()),
                status: resp.map_or(0, |r| r.status.as_u16()),
                duration: ctx.started.elapsed(),
                bytes: s.body_bytes_sent() as u64,
                seat: seat.as_deref(),
                user: user.as_deref(),
                denied: match ctx.outcome {
                    Outcome::Denied(r) => Some(r),
                    _ => None,
                },
                peer: peer.as_deref(),
                http: if s.is_http2() { "2" } else { "1.1" },
                tls: s.digest().is_some_and(|d| d.ssl_digest.is_some()),
            });
        }
    }
}

impl Gateway {
    /// The app answered a login: bind the reserved seat to the session cookie it set, or drop
    /// the reservation when it set none.
    async fn commit_login(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let Some(login) = ctx.login.take() else {
            return Ok(());
        };
        let login = *login;
        let Some(p) = ctx.product_arc() else {
            return Ok(());
        };
        let word = app_word_on(resp, &p.session.cookie);
        let now = now_ms();
        let value = match (word, login.take) {
            (Some(CookieWord::Set(v)), take) => (v, take),
            (word, Take::Seat { lease, held }) => {
                ctx.login_result = Some("failed");
                let login = PendingLogin {
                    take: Take::Seat { lease, held },
                    ..login
                };
                self.drop_lease(login).await;
                if let Some(CookieWord::Deleted) = word {
                    log::debug!(
                        "product {}: failed login deleted the session cookie",
                        p.name
                    );
                }
                return Ok(());
            }
            (Some(CookieWord::Deleted), Take::Relogin(old)) => {
                ctx.login_result = Some("failed");
                self.release_quietly(&p, &old, ReleaseReason::AppLogout, now)
                    .await;
                return Ok(());
            }
            (_, _) => {
                // A failed login from a browser that still holds its old session keeps it.
                ctx.login_result = Some("failed");
                return Ok(());
            }
        };
        let (value, take) = value;
        let key = SessionKey::new(&p.name, &value);
        let claim = &login.claim;
        let ledger = &self.app.ledger;
        let done = match &take {
            Take::Seat { lease, .. } => ledger.commit(lease, claim, key, now).await.map(Some),
            Take::Uncounted(state) => ledger
                .admit_uncounted(claim, *state, key, now)
                .await
                .map(Some),
            Take::Relogin(old) if *old == key => Ok(None),
            Take::Relogin(old) => ledger.rekey(old, key, now).await,
        };
        match done {
            Ok(id) => {
                ctx.login_result = Some("admitted");
                ctx.holds_seat = true;
                let a = &self.app.audit;
                let (kind, reused) = match &take {
                    Take::Seat { lease, .. } => ("seat", lease.reuse.is_some()),
                    Take::Uncounted(state) => (state.as_str(), false),
                    Take::Relogin(_) => ("relogin", true),
                };
                a.record(
                    "admit",
                    serde_json::json!({"seat": id.map(|i| i.to_string()), "product": p.name, "pool": claim.pool.pool,
                        "user": a.user(claim.user.as_deref()), "client": claim.client,
                        "reused": reused, "kind": kind}),
                );
                set_device_cookie(resp, &p, login.new_device.as_deref())?;
            }
            Err(e) => {
                // The app accepted the login but no seat could be bound: the next
                // request with that cookie is treated as a stale session.
                ctx.login_result = Some("failed");
                log::warn!(
                    "product {}: login succeeded at the app but no seat: {e}",
                    p.name
                );
                if let Take::Seat { lease, .. } = &take {
                    self.app.ledger.cancel(lease).await;
                }
            }
        }
        Ok(())
    }

    /// The app answered a request of a session the gateway knows (or a configured logout, or
    /// a cookie being adopted): its own word on the session cookie decides. Deleting it
    /// releases the seat (`app_logout`), a new value moves the seat to it, and a configured
    /// logout releases only when the app accepts it.
    async fn app_word(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let Some(key) = ctx.session else {
            return Ok(());
        };
        let Some(p) = ctx.product_arc() else {
            return Ok(());
        };
        let word = app_word_on(resp, &p.session.cookie);
        let now = now_ms();
        if let Some(claim) = ctx.adopt.take() {
            let location = resp
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            let accepted = classify::app_accepts_session(
                resp.status,
                location,
                &p.login.path,
                word == Some(CookieWord::Deleted),
            );
            if !accepted {
                return Ok(());
            }
            let key = match &word {
                Some(CookieWord::Set(v)) => SessionKey::new(&p.name, v),
                _ => key,
            };
            return self.adopt_now(resp, ctx, &p, &claim, key, now).await;
        }
        let word = match (ctx.logout, word) {
            (true, Some(CookieWord::Deleted)) => Some(ReleaseReason::Logout),
            (true, _) if resp.status.as_u16() < 400 => Some(ReleaseReason::Logout),
            (true, _) => None,
            (false, Some(CookieWord::Deleted)) => Some(ReleaseReason::AppLogout),
            (false, Some(CookieWord::Set(v))) => {
                let new = SessionKey::new(&p.name, &v);
                if new != key {
                    if let Err(e) = self.app.ledger.rekey(&key, new, now).await {
                        log::warn!(
                            "product {}: session cookie rotation not followed: {e}",
                            p.name
                        );
                    }
                }
                None
            }
            (false, None) => None,
        };
        if let Some(reason) = word {
            ctx.holds_seat = false;
            self.release_quietly(&p, &key, reason, now).await;
        }
        Ok(())
    }

    /// The app accepted a cookie under `expired: adopt`: it takes a seat now, or, when the pool
    /// filled while the app answered, the answer is replaced by the full-pool denial.
    async fn adopt_now(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
        p: &Product,
        claim: &Claim,
        key: SessionKey,
        now: Millis,
    ) -> Result<()> {
        let ledger = &self.app.ledger;
        // Several requests of one browser race with one cookie: whichever answer comes first
        // adopts it, the others find it held (before their reservation, or after it found the
        // pool full because of that very seat).
        let held = || async { matches!(ledger.touch(&key, now).await, Ok(Touch::Held { .. })) };
        if held().await {
            ctx.holds_seat = true;
            return Ok(());
        }
        let full = match ledger.reserve(claim, now).await {
            Ok(Reservation::Granted(lease)) => match ledger.commit(&lease, claim, key, now).await {
                Ok(id) => {
                    log::debug!("product {}: adopted {key:?} as {id}", p.name);
                    ctx.holds_seat = true;
                    return Ok(());
                }
                Err(e) => {
                    ledger.cancel(&lease).await;
                    log::warn!("product {}: adoption not recorded: {e}", p.name);
                    None
                }
            },
            Ok(Reservation::Full(_)) if held().await => {
                ctx.holds_seat = true;
                return Ok(());
            }
            Ok(Reservation::Full(full)) => Some(full),
            Err(e) => {
                log::warn!("product {}: adoption not recorded: {e}", p.name);
                None
            }
        };
        ctx.holds_seat = false;
        let c = match full {
            Some(full) => {
                ctx.outcome = Outcome::Denied(full.reason.as_str());
                self.audit_deny(p, claim, full.reason.as_str());
                self.full_denial(ctx, p, ctx.client, &full, None)
            }
            None => {
                ctx.outcome = Outcome::Denied("store_error");
                responses::unavailable()
            }
        };
        *resp = c.to_header()?;
        resp.insert_header(http::header::CONTENT_LENGTH, c.body.len())?;
        ctx.replace_body = Some(c.body.clone());
        ctx.inject = None;
        Ok(())
    }

    /// The app switched protocols for a seat holder: touch the seat at a fraction of its idle
    /// timeout for as long as the connection lives (ended by an admin, it still ends).
    fn keep_touched(&self, ctx: &mut Ctx) {
        let (Some(key), true) = (ctx.session, ctx.holds_seat) else {
            return;
        };
        let Some(p) = ctx.rt.as_ref().and_then(|rt| ctx.product(rt)) else {
            return;
        };
        let period = (p.session.idle_timeout / 3).clamp(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(60),
        );
        // An ignored socket (say, the app's notification channel) is kept valid, not active.
        let by_requests = p.session.idle_by == crate::config::IdleBy::Requests && !ctx.ignored;
        let ledger = self.app.ledger.clone();
        ctx.upgraded = Some(KeepTouched(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Under `idle_by: input` an open socket is no input: validated, not activity.
                match ledger.touch_as(&key, by_requests, now_ms()).await {
                    Ok(Touch::Gone(_)) => break,
                    Ok(Touch::Held { .. }) | Err(_) => {}
                }
            }
        })));
    }

    fn count_ignored(&self, p: &Product) {
        self.app
            .metrics
            .requests_ignored
            .with_label_values(&[p.name.as_str()])
            .inc();
    }

    /// The heartbeat's 204, carrying the seconds left (`X-Seatgate-Idle`) while the idle
    /// warning is due; the first such answer of a stretch of idleness is counted.
    fn idle_warning(
        &self,
        p: &Product,
        k: SessionKey,
        last_activity: Millis,
        now: Millis,
    ) -> Canned {
        let warned = &self.app.idle_warned;
        match activity::idle_warning(&p.session, last_activity, now) {
            Some(secs) => {
                if warned.first(k, last_activity) {
                    self.app
                        .metrics
                        .idle_warnings
                        .with_label_values(&[p.name.as_str()])
                        .inc();
                }
                responses::no_content().header_str(
                    http::HeaderName::from_static(presence::script::IDLE_HEADER),
                    &secs.to_string(),
                )
            }
            None => {
                warned.clear(&k);
                responses::no_content()
            }
        }
    }

    /// A seat holder's request whose activity hinged on the response's media type: now known.
    async fn activity_by_response(&self, s: &Session, resp: &ResponseHeader, ctx: &Ctx) {
        let (Some(key), Some(p)) = (ctx.session, ctx.rt.as_ref().and_then(|rt| ctx.product(rt)))
        else {
            return;
        };
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let counts = {
            let req = s.req_header();
            let path = classify::normalize_path(req.uri.path());
            let facts = RequestFacts::new(&req.method, &req.uri, &req.headers).with_path(&path);
            activity::counts(&p.session, &facts, Some(content_type))
        };
        if counts == Counts::Activity {
            if let Err(e) = self.app.ledger.touch_as(&key, true, now_ms()).await {
                log::debug!("product {}: activity not recorded: {e}", p.name);
            }
        } else {
            self.count_ignored(p);
        }
    }

    /// Releases a seat after the app has answered: the answer goes out whatever the store
    /// says, and a seat the store could not release ends at its idle timeout.
    async fn release_quietly(
        &self,
        p: &Product,
        key: &SessionKey,
        reason: ReleaseReason,
        now: Millis,
    ) {
        if let Err(e) = self.app.ledger.release(key, reason, now).await {
            log::warn!(
                "product {}: {} not recorded, the seat ends at idle timeout: {e}",
                p.name,
                reason.as_str()
            );
        }
    }

    /// A login that took no seat: its reservation goes, unless it was a seat held for its user
    /// (a mistyped password must not cost the hold), which is held again until its time is up.
    async fn drop_lease(&self, login: PendingLogin) {
        let Take::Seat { lease, held } = login.take else {
            return;
        };
        let now = now_ms();
        if let (Some(h), Some(user)) = (held, login.claim.user.as_deref()) {
            if h.until > now {
                let ledger = self.app.ledger.as_ref();
                let put = self
                    .selfserve
                    .put_hold(ledger, &login.claim.pool, user, h, now);
                if put.await.is_ok() {
                    return;
                }
            }
        }
        self.app.ledger.cancel(&lease).await;
    }

    async fn log_request(&self, _e: Option<&pingora_error::Error>, ctx: &mut Ctx) {
        if let Some(login) = ctx.login.take() {
            // The app never answered (connect error, reset): the reservation must not linger.
            self.drop_lease(*login).await;
            ctx.login_result = Some("failed");
        }
        let Some(rt) = ctx.rt.as_ref() else { return };
        let m = &self.app.metrics;
        let secs = ctx.started.elapsed().as_secs_f64();
        let action = ctx.action.unwrap_or(Action::Pass);
        let (Some(p), Some(series)) = (ctx.product(rt), ctx.series()) else {
            // No product matched: only the denial and its time are known.
            if let Outcome::Denied(reason) = ctx.outcome {
                m.denials
                    .with_label_values(&["none", "default", reason])
                    .inc();
            }
            m.request_duration
                .with_label_values(&["none", action.label()])
                .observe(secs);
            return;
        };
        let client = ctx.client_label(p);
        if let Some(r) = ctx.login_result {
            let result = if r == "bad_request" { "failed" } else { r };
            m.logins.with_label_values(&[&p.name, client, result]).inc();
        }
        match ctx.outcome {
            Outcome::Denied(CHECK_FULL) => series.check_denied(ctx.client),
            Outcome::Denied(reason) => m
                .denials
                .with_label_values(&[&p.name, client, reason])
                .inc(),
            _ => {}
        }
        series.duration(action, secs);
    }
}
