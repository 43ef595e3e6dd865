//! The pingora `ProxyHttp` impl: it only translates. A request becomes a `gate::SeatRequest`,
//! the gate's `Decision` becomes forwarding or `responses::render(&Denial)`, and the app's
//! answer becomes a `gate::AppAnswer`. What happened is kept in the context's `gate::Record`
//! and recorded once, in `logging` (metrics, audit, the access log). The HTTP chores (body
//! reads, forwarding headers, the heartbeat splice, relaying the app's answer) are in `wire`.

pub mod seen;
mod wire;

use self::wire::{read_body, set_device_cookie, set_forwarded};
use crate::app::{App, Finished, Runtime};
use crate::appclient::{self, AppClient};
use crate::config::{Mode, Product};
use crate::domain::{now_ms, SessionKey};
use crate::gate::{
    self, AppAnswer, Ask, Commit, Decision, Denial, Form, KeepTouched, Record, SeatRequest,
    Verdict, Verified, Verify, Watch,
};
use crate::policy::activity;
use crate::policy::classify::{self, Action, RequestFacts};
use crate::policy::cookies::{self, RequestSession};
use crate::policy::hostile::{self, Limits};
use crate::presence::Injector;
use crate::responses::{self, Canned};
use ::http::{Method, StatusCode};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    pub app: Arc<App>,
    /// The gateway's own calls to the app (self-service logins, background logouts).
    client: AppClient,
}

pub struct Ctx {
    started: Instant,
    rt: Option<Arc<Runtime>>,
    product: Option<usize>,
    /// Index into the product's `clients`; `None` is the built-in default kind.
    client: Option<usize>,
    action: Option<Action>,
    /// What the app's answer decides (the login waiting for it is boxed: the context lives
    /// inside pingora's per-request future, which is moved whole).
    watch: Watch,
    rec: Record,
    /// The request's session holds a seat (or its login just took one): its pages get the
    /// heartbeat script when the product has presence.
    holds_seat: bool,
    /// Splices the heartbeat script into this response's HTML body.
    inject: Option<Box<Injector>>,
    /// The gateway read the request body itself (and answered `Expect: 100-continue`).
    body_read: bool,
    /// The app's answer is replaced by this body (its header was replaced already).
    replace_body: Option<Bytes>,
    /// Keeps an upgraded connection's seat touched while the socket is open.
    upgraded: Option<KeepTouched>,
    /// The request's session cookie as classification hashed it (the access log's seat).
    request_key: Option<SessionKey>,
}

impl Ctx {
    /// This request's product, from the config snapshot the request started with.
    fn product_arc(&self) -> Option<Arc<Product>> {
        let products = &self.rt.as_ref()?.config.products;
        products.get(self.product?).cloned()
    }
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        Gateway {
            app,
            client: AppClient::new(),
        }
    }

    async fn respond(&self, s: &mut Session, c: &Canned) -> Result<bool> {
        self.respond_with(s, c, None).await
    }

    async fn respond_with(
        &self,
        s: &mut Session,
        c: &Canned,
        retry_after: Option<u64>,
    ) -> Result<bool> {
        // A request whose body we did not read cannot share its connection with the next one;
        // bodiless requests (checks are GETs; no length, no chunks) keep theirs.
        if !s.is_body_done() {
            s.set_keepalive(None);
        }
        c.send_with(s, retry_after).await?;
        Ok(true)
    }

    async fn deny(
        &self,
        s: &mut Session,
        ctx: &Ctx,
        p: Option<&Product>,
        d: &Denial,
    ) -> Result<bool> {
        let denials = ctx.product.and_then(|i| ctx.rt.as_ref()?.denials.get(i));
        let c = responses::render(d, p, denials, ctx.client, now_ms());
        self.respond_with(s, &c, responses::retry_after_of(d)).await
    }

    /// Carries out the gate's decision: `Ok(false)` forwards the request.
    async fn decided(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        d: Decision,
    ) -> Result<bool> {
        match d {
            Decision::Forward(w) => {
                ctx.holds_seat = matches!(w, Watch::Held(_));
                ctx.watch = w;
                Ok(false)
            }
            Decision::Deny(d) => self.deny(s, ctx, Some(p), &d).await,
            Decision::Answer(a) => self.respond(s, &responses::answer(&a, p)).await,
            Decision::Verify(v) => Box::pin(self.verify(s, ctx, p, v, None)).await,
        }
    }

    async fn ask(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        key: Option<SessionKey>,
        ask: Ask<'_>,
    ) -> Result<bool> {
        let req = seat_request(s, ctx, p, key, ask);
        let d = self.app.gate.on_request(&req, &mut ctx.rec).await;
        self.decided(s, ctx, p, d).await
    }

    async fn login(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        key: Option<SessionKey>,
    ) -> Result<bool> {
        let body = if classify::needs_body(&p.login.user) {
            ctx.body_read = true;
            read_body(s, p.max_login_body).await?.map(Some)
        } else {
            Ok(None)
        };
        let read = body.as_ref().map(|b| b.as_deref()).map_err(Clone::clone);
        let req = seat_request(s, ctx, p, key, Ask::Login { body: read });
        match self.app.gate.on_request(&req, &mut ctx.rec).await {
            Decision::Verify(v) => self.verify(s, ctx, p, v, body.ok().flatten()).await,
            d => self.decided(s, ctx, p, d).await,
        }
    }

    /// Sends a full-pool login to the app itself (`gate::Decision::Verify`); always writes the
    /// answer. `body` is the login body when the gateway already read it.
    async fn verify(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Product,
        v: Box<Verify>,
        body: Option<Bytes>,
    ) -> Result<bool> {
        let gate = &self.app.gate;
        let body = match body {
            Some(b) => b,
            None => match read_body(s, p.max_login_body).await? {
                Ok(b) => b,
                Err(bad) => {
                    let d = gate::bad_login(p, bad, &mut ctx.rec);
                    return self.deny(s, ctx, Some(p), &d).await;
                }
            },
        };
        // The product's own peer: plain or TLS with its SNI and CA, as the proxy connects.
        let peer = ctx.product.and_then(|i| ctx.rt.as_ref()?.peer(i));
        let host = s.req_header().headers.get(::http::header::HOST).cloned();
        let mut req = appclient::login_request(s.req_header(), body.len())?;
        set_forwarded(s, &mut req, ctx.rt.as_deref())?;
        let (cookie, name) = (&p.session.cookie, &p.name);
        let (answer, verdict) = (self.client)
            .verify_login(peer.clone(), req, body, cookie, name)
            .await;
        let value = match &verdict {
            Verdict::Session(v) => Some(v.clone()),
            _ => None,
        };
        match (
            gate.on_verified(p, &v, verdict, now_ms(), &mut ctx.rec)
                .await,
            answer,
        ) {
            (Verified::Relay { device }, Some((mut h, b))) => {
                set_device_cookie(&mut h, p, device.as_deref())?;
                appclient::relay(s, h, b).await
            }
            (Verified::Deny { denial, logout }, _) => {
                if let (true, Some(peer), Some(value)) = (logout, peer, value) {
                    self.client.logout_session(peer, p, host, &value);
                }
                self.deny(s, ctx, Some(p), &denial).await
            }
            (Verified::Relay { .. }, None) => {
                self.deny(s, ctx, Some(p), &Denial::AppUnreachable).await
            }
        }
    }

    async fn self_service(&self, s: &mut Session, ctx: &mut Ctx, p: &Product) -> Result<bool> {
        let body;
        let form = if s.req_header().method != Method::POST {
            Form::NotPost
        } else {
            match read_body(s, gate::MAX_FORM).await? {
                Err(_) => Form::TooLarge,
                Ok(b) => {
                    body = b;
                    let is_form = gate::is_form(&s.req_header().headers);
                    Form::Body {
                        is_form,
                        body: &body,
                    }
                }
            }
        };
        self.ask(s, ctx, p, None, Ask::SelfService(form)).await
    }
}

/// The request as the gate sees it.
fn seat_request<'a>(
    s: &'a Session,
    ctx: &Ctx,
    p: &'a Product,
    key: Option<SessionKey>,
    ask: Ask<'a>,
) -> SeatRequest<'a> {
    SeatRequest {
        product: p,
        client: ctx.client,
        headers: &s.req_header().headers,
        query: s.req_header().uri.query(),
        session: key,
        now: now_ms(),
        tls: s.digest().is_some_and(|d| d.ssl_digest.is_some()),
        ask,
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: pingora keeps the context inside its per-request future and moves that future
    /// whole, about three times a request (callgrind); one allocation costs less than moving
    /// its 192 bytes that often.
    type CTX = Box<Ctx>;

    /// No downstream modules: pingora's default is a response-compression module switched
    /// off, which still costs three allocations per request. The gateway never compresses;
    /// the app's own encoding passes through untouched.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx {
            started: Instant::now(),
            rt: None,
            product: None,
            client: None,
            action: None,
            watch: Watch::Nothing,
            rec: Record::default(),
            holds_seat: false,
            inject: None,
            body_read: false,
            replace_body: None,
            upgraded: None,
            request_key: None,
        })
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        // A 400 to this head is ours (counted by its reason), not pingora's refusal.
        seen::mark();
        let rt = self.app.runtime();
        ctx.rt = Some(rt.clone());
        // RFC 9112 9.3.2: pipelined requests are answered in order. Off, pingora answers the
        // first and drops the connection with the rest unanswered.
        s.set_pipelining_enabled(true);
        // Slow clients: each read of the body. The wait for the next request is bounded by the
        // connection (`server::head_deadline`), with no timer per request.
        s.set_read_timeout(Some(rt.config.timeouts.body));
        let req = s.req_header();
        let uri_len = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let raw = s.as_http1().map(|h| h.get_headers_raw_bytes());
        if let Err(bad) = hostile::inspect(
            req.version,
            uri_len,
            &req.headers,
            raw.as_deref(),
            Limits::default(),
        ) {
            // What follows on this connection cannot be trusted to start where we think it
            // does: answered and closed.
            log::info!("refused request: {}", bad.message());
            s.set_keepalive(None);
            let d = gate::refuse(bad, &mut ctx.rec);
            return self.deny(s, ctx, None, &d).await;
        }
        let path = classify::normalize_path(req.uri.path());
        let facts = RequestFacts::new(&req.method, &req.uri, &req.headers).with_path(&path);
        let Some(pi) = classify::product_for(&rt.config, &facts) else {
            let d = gate::no_product(&mut ctx.rec);
            return self.deny(s, ctx, None, &d).await;
        };
        let p = rt.config.products[pi].clone();
        ctx.product = Some(pi);
        let client = classify::client_for(&p, &facts);
        let mode = client.map_or(Mode::Hold, |i| p.clients[i].mode);
        ctx.client = client;
        let (key, ambiguous) = match cookies::request_session(&req.headers, &p.session.cookie) {
            RequestSession::None => (None, false),
            RequestSession::One(c) => (Some(SessionKey::of_cookie(&p.name, c)), false),
            RequestSession::Ambiguous => (None, true),
        };
        let has_credentials = classify::has_credentials(&req.headers);
        let action = classify::action(
            &p,
            mode,
            &facts,
            key.is_some() || ambiguous,
            has_credentials,
        );
        ctx.action = Some(action);
        ctx.request_key = key;
        let ask = match action {
            Action::Session | Action::Logout | Action::Heartbeat if ambiguous => Ask::Ambiguous,
            Action::Pass => Ask::Pass,
            Action::Logout => Ask::Logout,
            Action::Check => Ask::Check,
            // Decided from the facts classification already built.
            Action::Session => Ask::Session(activity::counts(&p.session, &facts, None)),
            Action::Heartbeat => Ask::Heartbeat,
            Action::Queue => Ask::Queue {
                get: req.method == Method::GET,
            },
            // Boxed: an async fn's future is as large as its largest branch, and pingora
            // copies this one whole on every request; the login and self-service flows (body
            // reads, `100 Continue`, calls to the app) are kilobytes that checks and
            // proxied requests must not pay for.
            Action::Login => return Box::pin(self.login(s, ctx, &p, key)).await,
            Action::SelfService => return Box::pin(self.self_service(s, ctx, &p)).await,
        };
        self.ask(s, ctx, &p, key, ask).await
    }

    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Box<Ctx>) -> Result<Box<HttpPeer>> {
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
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if ctx.body_read {
            // The client has had its `100 Continue` from us and the body is buffered: the app
            // must not send a second one.
            up.remove_header(&::http::header::EXPECT);
        }
        set_forwarded(s, up, ctx.rt.as_deref())
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue, 103 Early Hints: the app's real answer is still to come.
            return Ok(());
        }
        let Some(p) = ctx.product_arc() else {
            return Ok(());
        };
        if let Some(at) = ctx.watch.held().and_then(|h| h.ending_at) {
            let secs = at.saturating_sub(now_ms()).div_ceil(1000);
            resp.insert_header("x-seatgate-notice", format!("session-ending; in={secs}"))?;
        }
        if !matches!(ctx.watch, Watch::Nothing) {
            let now = now_ms();
            let a = AppAnswer::of(resp.status, &resp.headers, &p.session.cookie, now);
            let gate = &self.app.gate;
            let commit = gate
                .on_app_answer(&p, &mut ctx.watch, &a, now, &mut ctx.rec)
                .await;
            match commit {
                Commit::Keep { holds } => ctx.holds_seat = holds,
                Commit::Admitted {
                    device,
                    clear_ticket,
                } => {
                    ctx.holds_seat = true;
                    set_device_cookie(resp, &p, device.as_deref())?;
                    if let Some(c) = clear_ticket {
                        resp.append_header(::http::header::SET_COOKIE, c)?;
                    }
                }
                Commit::Replace(d) => {
                    ctx.holds_seat = false;
                    let denials = ctx.product.and_then(|i| ctx.rt.as_ref()?.denials.get(i));
                    let c = responses::render(&d, Some(&p), denials, ctx.client, now_ms());
                    *resp = c.to_header_with(responses::retry_after_of(&d))?;
                    resp.insert_header(::http::header::CONTENT_LENGTH, c.body.len())?;
                    ctx.replace_body = Some(c.body.clone());
                    ctx.inject = None;
                }
            }
        }
        if let Some(h) = ctx.watch.held().filter(|h| h.by_response).copied() {
            let gate = &self.app.gate;
            (gate.on_response_type(&p, h.key, s.req_header(), &resp.headers, &mut ctx.rec)).await;
        }
        if resp.status == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(key), true) = (ctx.watch.key(), ctx.holds_seat) {
                let ignored = ctx.watch.held().is_some_and(|h| h.ignored);
                ctx.upgraded = Some(self.app.gate.keep_touched(&p, key, ignored));
            }
        } else if ctx.holds_seat {
            let ending_at = ctx.watch.held().and_then(|h| h.ending_at);
            let script = ctx
                .product
                .and_then(|i| ctx.rt.as_ref()?.scripts.get(i)?.as_ref());
            if let Some(page) = gate::plan_injection(s.req_header(), resp, script, ending_at)? {
                if page.close {
                    s.set_keepalive(None);
                }
                ctx.inject = Some(page.inject);
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Box<Ctx>,
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

    async fn logging(
        &self,
        s: &mut Session,
        _e: Option<&pingora_error::Error>,
        ctx: &mut Box<Ctx>,
    ) {
        // The upgraded connection is over: its seat is left to the ordinary rules again.
        ctx.upgraded = None;
        let watch = std::mem::take(&mut ctx.watch);
        self.app
            .gate
            .on_no_answer(watch, now_ms(), &mut ctx.rec)
            .await;
        let f = Finished {
            rt: ctx.rt.as_deref(),
            product: ctx.product,
            client: ctx.client,
            action: ctx.action.unwrap_or(Action::Pass),
            started: ctx.started,
            rec: &ctx.rec,
            request_key: ctx.request_key,
        };
        self.app.record(&f);
        self.app.log_access(s, &f);
    }
}

#[cfg(test)]
#[test]
fn the_context_stays_small() {
    // It lives inside pingora's per-request future, which is moved whole (192 B now).
    assert!(std::mem::size_of::<Ctx>() <= 208);
}
