//! The admission service: every seat rule a request meets between the proxy and the ledger.
//!
//! The proxy turns a request into a [`SeatRequest`] and gets a [`Decision`] back: forward
//! (and what to watch in the app's answer), deny (a [`Denial`] that `responses::render` turns
//! into an answer), answer (heartbeat, self-service) or verify a full-pool login at the app
//! first. The app's answer comes back as an [`AppAnswer`] and gives a [`Commit`]. Exempt and
//! named users, devices, re-logins, self-service holds, `on_store_error`, adoption and the
//! app's word on its cookie are all decided here; what a request did (the metric outcomes and
//! audit events) is written into its [`Record`], which `App::record` turns into metrics and
//! audit lines once, when the proxy logs the request.
//!
//! Time is an input (`now`), the store is a `SeatLedger`, and nothing here knows pingora's
//! `Session` (only the page splice, `plan_injection`, rewrites a response header): the table
//! tests drive it with a memory ledger and a fixed clock.

mod answer;
mod login;
mod page;
mod queue;
mod record;
mod selfserve;
mod session;
mod tokens;

#[cfg(test)]
mod tests;

pub use page::{plan_injection, Page};
pub use queue::poll_every;
pub use record::{
    AuditEvent, BadReason, Beat, DenyReason, LoginResult, Outcome, Record, SelfServed,
};
pub use session::KeepTouched;
pub use tokens::Tokens;

use crate::config::{Product, StoreErrorPolicy};
use crate::domain::{
    Claim, Full, Gone, Lease, Millis, PoolKey, QueueStatus, SeatState, SessionKey, TicketKey,
};
use crate::ledger::{LedgerError, SharedLedger};
use crate::policy::activity::Counts;
use crate::policy::classify::BadLogin;
use crate::policy::cookies::CookieWord;
use crate::policy::hostile::BadRequest;
use crate::policy::selfserve::{Hold, TokenError};
use crate::presence::{self, HeartbeatLimiter, IdleWarnings};
use http::{HeaderMap, StatusCode};

/// The self-service form carries one token: a larger body is refused unread.
pub const MAX_FORM: usize = 4096;

/// The admission service. One per process: the heartbeat limits, idle warnings and
/// self-service state outlive reloads like the seats they concern.
pub struct Gate {
    ledger: SharedLedger,
    tokens: Tokens,
    /// Per-session heartbeat flood limit.
    limiter: HeartbeatLimiter,
    /// Seats shown the idle warning (counted once each).
    warned: IdleWarnings,
}

/// One request as the gate sees it: plain data the proxy extracted.
pub struct SeatRequest<'a> {
    pub product: &'a Product,
    /// Index into the product's `clients`; `None` is the built-in default kind.
    pub client: Option<usize>,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The request's session cookie, hashed.
    pub session: Option<SessionKey>,
    pub now: Millis,
    /// The request came over TLS (the gateway's own cookies are then `Secure`).
    pub tls: bool,
    pub ask: Ask<'a>,
}

/// What the request asks for, by its classification.
pub enum Ask<'a> {
    /// Nothing to enforce; the app's word on a cookie it carries still counts.
    Pass,
    /// A configured logout: released once the app accepts it.
    Logout,
    /// Pass/fail availability check.
    Check,
    /// A request carrying the session cookie, and whether it is activity.
    Session(Counts),
    /// A login; `body` is the request body when the user is read from it (or why it could
    /// not be read).
    Login {
        body: Result<Option<&'a [u8]>, BadLogin>,
    },
    /// A presence ping (its query has the `pagehide` hint and the input claim).
    Heartbeat,
    /// `POST …/.seatgate/self-service`.
    SelfService(Form<'a>),
    /// `GET …/.seatgate/queue` (`get`: the method is GET; anything else is refused).
    Queue { get: bool },
    /// The session cookie twice with different values, on a request that needs to know which.
    Ambiguous,
}

/// The self-service form as the proxy read it.
pub enum Form<'a> {
    NotPost,
    TooLarge,
    Body { is_form: bool, body: &'a [u8] },
}

/// What the gateway does with a request.
#[derive(Debug)]
#[must_use]
pub enum Decision {
    /// Forward to the app; what its answer decides.
    Forward(Watch),
    /// Answer without the app: a denial.
    Deny(Denial),
    /// Answer without the app, not a denial.
    Answer(Answer),
    /// A full-pool login whose user may free one of their own seats: the login goes to the
    /// app out of band first (`on_verified` decides with its answer).
    Verify(Box<Verify>),
}

/// What the app's answer to a forwarded request decides.
#[derive(Debug, Default)]
pub enum Watch {
    /// Nothing (no cookie, a passed check, a store error under `fail_open`).
    #[default]
    Nothing,
    /// A cookie the gateway may know: deleting it releases its seat, a new value moves it.
    Session(SessionKey),
    /// A seat holder's request (also watched like `Session`).
    Held(Held),
    /// A configured logout of this session.
    Logout(SessionKey),
    /// A login waiting for the app's answer.
    Login(Box<PendingLogin>),
    /// `expired: adopt`: a seat is taken only once the app has accepted the cookie.
    Adopt(SessionKey, Box<Claim>),
}

/// A seat holder's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub key: SessionKey,
    /// The seat is being ended by an admin at this time: tell the user.
    pub ending_at: Option<Millis>,
    /// Activity hinges on the response's media type (`on_response_type`).
    pub by_response: bool,
    /// The request was not activity (`session.activity.ignore`, `idle_by: input`).
    pub ignored: bool,
}

impl Watch {
    /// The session the app's answer concerns, if any.
    pub fn key(&self) -> Option<SessionKey> {
        match self {
            Watch::Session(k) | Watch::Logout(k) | Watch::Adopt(k, _) => Some(*k),
            Watch::Held(h) => Some(h.key),
            Watch::Nothing | Watch::Login(_) => None,
        }
    }

    pub fn held(&self) -> Option<&Held> {
        match self {
            Watch::Held(h) => Some(h),
            _ => None,
        }
    }
}

/// A login waiting for the app's answer.
#[derive(Debug)]
pub struct PendingLogin {
    claim: Claim,
    new_device: Option<String>,
    take: Take,
    /// The waiting-line ticket the login carried (for its pool): it leaves the line once the
    /// login takes its seat, and a failed login keeps the seat held for it.
    ticket: Option<TicketKey>,
    /// The login came over TLS (for the ticket cookie's deletion).
    tls: bool,
}

/// What a login takes once the app accepts it (sets its session cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A full-pool login to verify at the app before its user is offered their own sessions.
#[derive(Debug)]
pub struct Verify {
    claim: Claim,
    new_device: Option<String>,
}

/// Why the gateway answers a request itself instead of the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    /// No product serves this host and path.
    NoProduct,
    /// Framing or sizes that cannot be trusted: answered and the connection closed.
    Refused(BadRequest),
    /// A login whose user cannot be read.
    BadLogin(BadLogin),
    /// The session cookie twice with different values.
    AmbiguousSession,
    /// The store failed (`on_store_error` closed the way), or no current view of the pool.
    StoreError,
    /// A failed check: the client kind's `on_full` as configured, its `Retry-After` when a
    /// seat is likely free (the estimate a full login's denial carries too).
    CheckFull { retry_after_secs: u64 },
    /// No seat for a login or an adoption; `offer`: the user's own sessions to end;
    /// `retry_after_secs`: when a seat is likely free (`Retry-After`).
    Full {
        full: Full,
        offer: Option<Box<OfferPage>>,
        retry_after_secs: u64,
    },
    /// The session's seat is gone: to the login page.
    Expired(Gone),
    /// The app did not answer a login the gateway sent on the user's behalf.
    AppUnreachable,
    /// A heartbeat of a session without a seat.
    NoSeat,
    /// A heartbeat flood.
    TooManyBeats { retry_after_secs: u64 },
    /// A self-service request that cannot be honoured.
    SelfService(Refusal),
    /// The waiting line's poll endpoint asked with another method than GET.
    QueueNotGet,
    /// A ticket polled again within `MIN_POLL_INTERVAL`.
    QueueTooSoon { retry_after_secs: u64 },
}

/// Why a self-service request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotPost,
    TooLarge,
    NotForm,
    /// No room to remember another used token.
    Busy,
    Token(TokenError),
}

/// "End one of your sessions and continue", as the denial page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPage {
    pub user: String,
    /// Where the buttons post (the product's `/.seatgate/self-service`).
    pub action: String,
    pub valid_secs: u64,
    pub sessions: Vec<OfferedSession>,
}

/// One of the denied user's own sessions, with its signed single-use choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedSession {
    pub started_at: Millis,
    pub last_activity: Millis,
    pub client: String,
    pub device: Option<String>,
    /// The session was opened from the browser asking now (same device cookie).
    pub this_device: bool,
    pub standby: bool,
    /// The signed, single-use choice posted by its button (the page lists it as is).
    pub token: String,
}

/// An answer of the gateway's own that is not a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The heartbeat's 204; `idle_secs` while the idle warning is due.
    Beat { idle_secs: Option<u64> },
    /// The chosen session is ended: back to the login page.
    SelfServiceDone,
    /// A login refused for want of a seat joined the line: the waiting page.
    Waiting(Box<Waiting>),
    /// The poll's answer: the ticket's status, `None` when the line does not know it.
    Queue(Option<QueueStatus>),
    /// The poll as a page (`?view=page`: the waiting page's fallback without script).
    QueuePage {
        status: Option<QueueStatus>,
        poll_every: Millis,
    },
}

/// The waiting page of a ticket that just joined (or rejoined) the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub status: QueueStatus,
    /// The ticket cookie (`policy::queue::ticket_set_cookie`).
    pub set_cookie: String,
    /// How often the page polls.
    pub poll_every: Millis,
}

/// The app's answer, as far as seats care.
pub struct AppAnswer<'a> {
    pub status: StatusCode,
    pub location: Option<&'a str>,
    /// Its last word on the session cookie.
    pub word: Option<CookieWord>,
}

impl<'a> AppAnswer<'a> {
    /// The answer's status, `Location` and last word on the session cookie `cookie`.
    pub fn of(status: StatusCode, headers: &'a HeaderMap, cookie: &str, now: Millis) -> Self {
        AppAnswer {
            status,
            location: headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            word: app_word(headers, cookie, now),
        }
    }
}

/// What the app's answer changes in the response.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Commit {
    /// The answer goes out as the app gave it; `holds`: the request's session holds a seat
    /// (its pages get the heartbeat script).
    Keep { holds: bool },
    /// The login took its seat; `device`: the device cookie to give a browser without one;
    /// `clear_ticket`: the `Set-Cookie` deleting the waiting-line ticket it carried.
    Admitted {
        device: Option<String>,
        clear_ticket: Option<String>,
    },
    /// The answer is replaced (an adoption found no seat after all).
    Replace(Denial),
}

/// The app's answer to a login the gateway verified itself.
pub enum Verdict {
    /// No answer (connect error, timeout).
    Unreachable,
    /// An answer without a session cookie (wrong password): relayed as it is.
    NoSession,
    /// The app set this session cookie value.
    Session(String),
}

/// What the proxy does with a verified login.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Verified {
    /// Relay the app's answer; `device`: the device cookie to add.
    Relay { device: Option<String> },
    /// Answer with `denial`; `logout`: log the app session the browser never gets out at the
    /// app (in the background).
    Deny { denial: Denial, logout: bool },
}

impl Gate {
    pub fn new(ledger: SharedLedger) -> Self {
        Self::with_tokens(ledger, Tokens::new())
    }

    pub fn with_tokens(ledger: SharedLedger, tokens: Tokens) -> Self {
        Gate {
            ledger,
            tokens,
            limiter: HeartbeatLimiter::default(),
            warned: IdleWarnings::default(),
        }
    }

    pub fn ledger(&self) -> &SharedLedger {
        &self.ledger
    }

    /// Decides a request. The login, session, heartbeat and self-service branches are
    /// boxed: the proxy's request future is moved whole by pingora, and a check must not
    /// pay for the largest branch.
    pub async fn on_request(&self, r: &SeatRequest<'_>, rec: &mut Record) -> Decision {
        let p = r.product;
        match &r.ask {
            Ask::Pass => Decision::Forward(r.session.map_or(Watch::Nothing, Watch::Session)),
            Ask::Logout => Decision::Forward(r.session.map_or(Watch::Nothing, Watch::Logout)),
            Ask::Check => self.check(r, rec),
            Ask::Ambiguous => {
                // Whichever value the app reads, a seat charged to the other would let a
                // second app session ride on it.
                rec.deny(DenyReason::BadRequest);
                rec.bad_request = Some(BadReason::AmbiguousSession);
                Decision::Deny(Denial::AmbiguousSession)
            }
            Ask::Session(counts) => match r.session {
                Some(k) => Box::pin(self.session(r, k, *counts, rec)).await,
                None => Decision::Forward(Watch::Nothing),
            },
            Ask::Login { body } => Box::pin(self.login(r, body.clone(), rec)).await,
            Ask::Heartbeat => {
                let (hint, input) = (presence::is_hide_hint(r.query), presence::is_input(r.query));
                Box::pin(self.heartbeat(p, r.session, hint, input, r.now, rec)).await
            }
            Ask::SelfService(form) => Box::pin(self.self_service(p, form, r.now, rec)).await,
            Ask::Queue { get } => Box::pin(self.poll(r, *get, rec)).await,
        }
    }

    /// Maps a store failure to the product's `on_store_error`: the denial, or `None` to let
    /// the request through without a seat. `known` is the gateway's last view for
    /// `last_known` (session held / a seat free); without one, `last_known` fails closed.
    fn store_failed(
        &self,
        p: &Product,
        e: &LedgerError,
        known: Option<bool>,
        rec: &mut Record,
    ) -> Option<Denial> {
        if !e.is_store_failure() {
            // Not the store failing (a pool this config does not have): `on_store_error`
            // does not apply, and nothing is let through on it.
            log::error!("product {}: {e}", p.name);
            rec.deny(DenyReason::StoreError);
            return Some(Denial::StoreError);
        }
        rec.store_error = true;
        log::warn!(
            "product {}: seat store error ({}): {e}",
            p.name,
            store_error_label(p.on_store_error)
        );
        let through = match p.on_store_error {
            StoreErrorPolicy::FailClosed => false,
            StoreErrorPolicy::FailOpen => true,
            StoreErrorPolicy::LastKnown => known == Some(true),
        };
        if through {
            None
        } else {
            rec.deny(DenyReason::StoreError);
            Some(Denial::StoreError)
        }
    }

    /// The request answers itself once the app is gone: a login the app never answered
    /// (connect error, reset) must not leave its reservation behind.
    pub async fn on_no_answer(&self, watch: Watch, now: Millis, rec: &mut Record) {
        if let Watch::Login(login) = watch {
            self.drop_lease(*login, now).await;
            rec.login = Some(LoginResult::Failed);
        }
    }
}

/// The `policy` label of `seatgate_store_errors_total`.
pub fn store_error_label(p: StoreErrorPolicy) -> &'static str {
    match p {
        StoreErrorPolicy::FailClosed => "fail_closed",
        StoreErrorPolicy::FailOpen => "fail_open",
        StoreErrorPolicy::LastKnown => "last_known",
    }
}

/// The app's last word on its session cookie `cookie` in an answer's headers (`now`: for
/// cookies deleted by an expiry in the past).
pub fn app_word(headers: &HeaderMap, cookie: &str, now: Millis) -> Option<CookieWord> {
    let set = crate::policy::cookies::set_cookies(headers);
    if set.is_empty() {
        return None;
    }
    crate::policy::cookies::set_cookie_word(&set, cookie, (now / 1000) as i64)
}

/// Whether a request's body is an HTML form (`application/x-www-form-urlencoded`).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A request refused before classification: counted under its reason.
pub fn refuse(bad: BadRequest, rec: &mut Record) -> Denial {
    rec.deny(DenyReason::BadRequest);
    rec.bad_request = Some(BadReason::Hostile(bad));
    Denial::Refused(bad)
}

/// No product serves the request.
pub fn no_product(rec: &mut Record) -> Denial {
    rec.deny(DenyReason::NoProduct);
    Denial::NoProduct
}

/// A login (or self-service verification) whose body or user cannot be read.
pub fn bad_login(p: &Product, bad: BadLogin, rec: &mut Record) -> Denial {
    log::info!(
        "product {}: refused malformed login: {}",
        p.name,
        bad.message()
    );
    rec.deny(DenyReason::BadRequest);
    rec.login = Some(LoginResult::BadRequest);
    rec.bad_request = Some(match bad {
        BadLogin::AmbiguousUser(_) => BadReason::AmbiguousUser,
        _ => BadReason::BadLogin,
    });
    Denial::BadLogin(bad)
}

/// Whether the client kind's `on_full` is the built-in page (which can show counts and the
/// self-service offer) rather than a configured body.
pub fn builtin_page(p: &Product, client: Option<usize>) -> bool {
    client.is_none_or(|i| p.clients[i].builtin_page)
}

/// The client kind's label (`default` for the built-in kind).
pub fn client_label(p: &Product, client: Option<usize>) -> &str {
    client
        .and_then(|i| p.clients.get(i))
        .map_or("default", |c| c.kind.as_str())
}

/// The pool a user's login draws on: an explicit user list first, then a header mapping, then
/// the default pool.
pub fn pool_for(p: &Product, user: Option<&str>, headers: &HeaderMap) -> usize {
    if let Some(u) = user {
        if let Some(i) = p.pools.iter().position(|pool| pool.users.contains(u)) {
            return i;
        }
    }
    if let Some(i) = p.pools.iter().position(|pool| {
        pool.header.as_ref().is_some_and(|h| {
            headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| h.test.matches(v)))
        })
    }) {
        return i;
    }
    p.pools.iter().position(|pool| pool.default).unwrap_or(0)
}

pub fn pool_key(p: &Product, idx: usize) -> &PoolKey {
    &p.pool_keys[idx]
}
