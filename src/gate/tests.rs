//! Table tests of the admission service: a memory ledger (a Redis ledger on a closed port for
//! store errors), a fixed clock, no socket. Every `Decision`, `Denial` and `Commit` variant
//! has a case that fails when its rule breaks.

use super::*;
use crate::config::Config;
use crate::domain::{QueueStatus, RedisConfig, RedisTarget, ReleaseReason};
use crate::ledger::memory::MemoryLedger;
use crate::ledger::redis::RedisLedger;
use crate::ledger::NoObserver;
use http::HeaderValue;
use std::sync::Arc;

const NOW: Millis = 1_700_000_000_000;
const MIN: Millis = 60_000;

fn config(session: &str, extra: &str) -> Config {
    let yaml = format!(
        "listen: 127.0.0.1:1
admin: {{ listen: 127.0.0.1:2 }}
store: {{ kind: embedded, path: /tmp/x.redb }}
products:
  - name: crm
    upstream: 127.0.0.1:3
    session: {{ cookie: SID, idle_timeout: 10m, max_lifetime: 1h{session} }}
    login: {{ path: /login, method: POST, user: {{ form_field: username }} }}
    logout: {{ path: /logout }}
    seats: 1
    exempt_users: [svc]
    named_users: [boss]
{extra}"
    );
    crate::config::parse(&yaml).unwrap()
}

struct T {
    cfg: Config,
    gate: Gate,
}

fn memory() -> SharedLedger {
    Arc::new(MemoryLedger::volatile(Arc::new(NoObserver)))
}

/// Nothing listens on port 1: every store call fails, as a Redis outage does.
fn down() -> SharedLedger {
    let cfg = RedisConfig {
        target: RedisTarget::Single("redis://127.0.0.1:1/".into()),
        prefix: "gate-test".into(),
    };
    Arc::new(RedisLedger::new(&cfg, Arc::new(NoObserver)).unwrap())
}

fn gate_on(ledger: SharedLedger, session: &str, extra: &str) -> T {
    let cfg = config(session, extra);
    ledger.configure(&crate::config::pool_specs(&cfg.products[0]));
    T {
        cfg,
        gate: Gate::new(ledger),
    }
}

fn gate(session: &str, extra: &str) -> T {
    gate_on(memory(), session, extra)
}

fn key(v: &str) -> SessionKey {
    SessionKey::new("crm", v)
}

fn form() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    h
}

fn set(v: &str) -> AppAnswer<'static> {
    AppAnswer {
        status: StatusCode::FOUND,
        location: None,
        word: Some(CookieWord::Set(v.into())),
    }
}

fn plain(status: u16) -> AppAnswer<'static> {
    AppAnswer {
        status: StatusCode::from_u16(status).unwrap(),
        location: None,
        word: None,
    }
}

impl T {
    fn p(&self) -> &Product {
        &self.cfg.products[0]
    }

    fn free(&self) -> Option<u32> {
        self.gate.ledger().available(&self.p().pool_keys[0], NOW)
    }

    async fn ask(&self, session: Option<&str>, ask: Ask<'_>, now: Millis) -> (Decision, Record) {
        self.ask_with(session, ask, now, None).await
    }

    async fn ask_with(
        &self,
        session: Option<&str>,
        ask: Ask<'_>,
        now: Millis,
        query: Option<&str>,
    ) -> (Decision, Record) {
        let headers = form();
        let r = SeatRequest {
            product: self.p(),
            client: None,
            headers: &headers,
            query,
            session: session.map(key),
            now,
            tls: false,
            ask,
        };
        let mut rec = Record::default();
        let d = self.gate.on_request(&r, &mut rec).await;
        (d, rec)
    }

    async fn login_as(&self, user: &str, session: Option<&str>) -> (Decision, Record) {
        let body = format!("username={user}");
        let ask = Ask::Login {
            body: Ok(Some(body.as_bytes())),
        };
        self.ask(session, ask, NOW).await
    }

    async fn answer(&self, d: Decision, a: &AppAnswer<'_>, rec: &mut Record) -> Commit {
        let Decision::Forward(mut w) = d else {
            panic!("not forwarded")
        };
        self.gate.on_app_answer(self.p(), &mut w, a, NOW, rec).await
    }

    /// A user logged in with cookie value `sid`.
    async fn logged_in(&self, user: &str, sid: &str) {
        let (d, mut rec) = self.login_as(user, None).await;
        let c = self.answer(d, &set(sid), &mut rec).await;
        assert_eq!(
            c,
            Commit::Admitted {
                device: None,
                clear_ticket: None
            },
            "{user}"
        );
    }
}

#[tokio::test]
async fn forwards_pass_logout_and_checks_with_what_to_watch() {
    let t = gate("", "");
    let (d, _) = t.ask(None, Ask::Pass, NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Nothing)));
    let (d, _) = t.ask(Some("x"), Ask::Pass, NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Session(k)) if k == key("x")));
    let (d, _) = t.ask(Some("x"), Ask::Logout, NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Logout(k)) if k == key("x")));
    let (d, rec) = t.ask(None, Ask::Check, NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Nothing)));
    assert_eq!((rec.outcome, rec.check), (Outcome::CheckPassed, Some(true)));
}

#[tokio::test]
async fn a_login_takes_its_seat_once_the_app_sets_the_cookie() {
    let t = gate("", "");
    let (d, mut rec) = t.login_as("ann", None).await;
    assert!(
        matches!(&d, Decision::Forward(Watch::Login(l)) if matches!(l.take, Take::Seat { .. }))
    );
    assert_eq!(t.free(), Some(0), "reserved while the app answers");
    let c = t.answer(d, &set("s1"), &mut rec).await;
    assert_eq!(
        c,
        Commit::Admitted {
            device: None,
            clear_ticket: None
        }
    );
    assert_eq!(rec.login, Some(LoginResult::Admitted));
    assert!(matches!(
        rec.audit.as_deref(),
        Some(AuditEvent::Admit {
            kind: Some("seat"),
            ..
        })
    ));
    // The seat holder's requests are forwarded as held.
    let (d, rec) = t.ask(Some("s1"), Ask::Session(Counts::Activity), NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Held(h)) if h.key == key("s1") && !h.ignored));
    assert!(!rec.ignored);
    let (d, rec) = t.ask(Some("s1"), Ask::Session(Counts::Ignored), NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Held(h)) if h.ignored));
    assert!(rec.ignored, "counted as ignored");
    let (d, _) = t
        .ask(Some("s1"), Ask::Session(Counts::ByResponse), NOW)
        .await;
    assert!(matches!(d, Decision::Forward(Watch::Held(h)) if h.by_response));
}

#[tokio::test]
async fn a_failed_login_gives_its_reservation_back() {
    let t = gate("", "");
    for a in [plain(200), plain(401)] {
        let (d, mut rec) = t.login_as("ann", None).await;
        assert_eq!(
            t.answer(d, &a, &mut rec).await,
            Commit::Keep { holds: false }
        );
        assert_eq!(rec.login, Some(LoginResult::Failed));
        assert_eq!(t.free(), Some(1));
    }
    // Never answered (connect error): the same.
    let (d, mut rec) = t.login_as("ann", None).await;
    let Decision::Forward(w) = d else { panic!() };
    t.gate.on_no_answer(w, NOW, &mut rec).await;
    assert_eq!((rec.login, t.free()), (Some(LoginResult::Failed), Some(1)));
}

#[tokio::test]
async fn a_full_pool_denies_other_users_but_not_exempt_named_or_relogins() {
    let t = gate("", "");
    t.logged_in("ann", "s1").await;
    let (d, rec) = t.login_as("bob", None).await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::Full { offer: None, .. })
    ));
    assert_eq!(
        rec.outcome,
        Outcome::Denied(DenyReason::Full(crate::domain::FullReason::Pool))
    );
    assert_eq!(rec.login, Some(LoginResult::Denied));
    assert!(matches!(
        rec.audit.as_deref(),
        Some(AuditEvent::Deny { reason: "full", .. })
    ));
    // Exempt and named users take no seat, even at a full pool.
    for (user, kind) in [("svc", "exempt"), ("boss", "named")] {
        let (d, mut rec) = t.login_as(user, None).await;
        let sid = format!("{user}-sid");
        assert_eq!(
            t.answer(d, &set(&sid), &mut rec).await,
            Commit::Admitted {
                device: None,
                clear_ticket: None
            }
        );
        assert!(
            matches!(rec.audit.as_deref(), Some(AuditEvent::Admit { kind: Some(k), .. }) if *k == kind)
        );
    }
    // A re-login from ann's browser moves her seat to the new cookie.
    let (d, mut rec) = t.login_as("ann", Some("s1")).await;
    assert!(matches!(&d, Decision::Forward(Watch::Login(l)) if l.take == Take::Relogin(key("s1"))));
    assert_eq!(
        t.answer(d, &set("s2"), &mut rec).await,
        Commit::Admitted {
            device: None,
            clear_ticket: None
        }
    );
    let (d, _) = t.ask(Some("s2"), Ask::Session(Counts::Activity), NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Held(_))));
    let (d, _) = t.ask(Some("s1"), Ask::Session(Counts::Activity), NOW).await;
    assert!(
        matches!(d, Decision::Deny(Denial::Expired(_))),
        "the old cookie is gone"
    );
    assert_eq!(t.free(), Some(0), "still one seat");
}

#[tokio::test]
async fn user_device_logins_get_a_device_cookie() {
    let t = gate("", "    seats_per: user_device\n");
    let (d, mut rec) = t.login_as("ann", None).await;
    let Commit::Admitted {
        device: Some(d), ..
    } = t.answer(d, &set("s1"), &mut rec).await
    else {
        panic!("no device cookie")
    };
    assert!(crate::policy::cookies::valid_device(&d));
}

#[tokio::test]
async fn unreadable_logins_and_ambiguous_sessions_are_bad_requests() {
    let t = gate("", "");
    let (d, rec) = t
        .ask(
            None,
            Ask::Login {
                body: Ok(Some(b"password=x")),
            },
            NOW,
        )
        .await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::BadLogin(BadLogin::MissingUser(_)))
    ));
    assert_eq!(
        (rec.login, rec.bad_request),
        (Some(LoginResult::BadRequest), Some(BadReason::BadLogin))
    );
    let too_large = Err(BadLogin::TooLarge { limit: 1 });
    let (d, _) = t.ask(None, Ask::Login { body: too_large }, NOW).await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::BadLogin(BadLogin::TooLarge { .. }))
    ));
    let (d, rec) = t.ask(None, Ask::Ambiguous, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::AmbiguousSession)));
    assert_eq!(rec.bad_request, Some(BadReason::AmbiguousSession));
    let mut rec = Record::default();
    let bad = BadRequest::all()[0];
    assert_eq!(refuse(bad, &mut rec), Denial::Refused(bad));
    assert_eq!(rec.bad_request, Some(BadReason::Hostile(bad)));
    let mut rec = Record::default();
    assert_eq!(no_product(&mut rec), Denial::NoProduct);
    assert_eq!(rec.denied(), Some("no_product"));
}

#[tokio::test]
async fn the_app_word_releases_moves_and_logs_out() {
    let t = gate("", "");
    t.logged_in("ann", "s1").await;
    // A new cookie value moves the seat.
    let (d, mut rec) = t.ask(Some("s1"), Ask::Session(Counts::Activity), NOW).await;
    assert_eq!(
        t.answer(d, &set("s2"), &mut rec).await,
        Commit::Keep { holds: true }
    );
    let (d, _) = t.ask(Some("s2"), Ask::Session(Counts::Activity), NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Held(_))));
    // A logout the app refuses keeps the seat; one it accepts releases it.
    let (d, mut rec) = t.ask(Some("s2"), Ask::Logout, NOW).await;
    assert_eq!(
        t.answer(d, &plain(403), &mut rec).await,
        Commit::Keep { holds: false }
    );
    assert_eq!(t.free(), Some(0));
    let (d, mut rec) = t.ask(Some("s2"), Ask::Logout, NOW).await;
    let _ = t.answer(d, &plain(302), &mut rec).await;
    assert_eq!(t.free(), Some(1));
    // Deleting the cookie on any page releases the seat (app_logout).
    t.logged_in("bob", "b1").await;
    let (d, mut rec) = t.ask(Some("b1"), Ask::Session(Counts::Activity), NOW).await;
    let deleted = AppAnswer {
        word: Some(CookieWord::Deleted),
        ..plain(200)
    };
    assert_eq!(
        t.answer(d, &deleted, &mut rec).await,
        Commit::Keep { holds: false }
    );
    let (d, _) = t.ask(Some("b1"), Ask::Session(Counts::Activity), NOW).await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::Expired(Gone::Released(ReleaseReason::AppLogout)))
    ));
}

#[tokio::test]
async fn expired_adopt_takes_a_seat_only_once_the_app_accepts_the_cookie() {
    let t = gate(", expired: adopt", "");
    let (d, mut rec) = t
        .ask(Some("old"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(&d, Decision::Forward(Watch::Adopt(k, _)) if *k == key("old")));
    assert_eq!(t.free(), Some(1), "nothing reserved before the app answers");
    assert_eq!(
        t.answer(d, &plain(200), &mut rec).await,
        Commit::Keep { holds: true }
    );
    assert_eq!(t.free(), Some(0));
    // The app refuses a cookie: no seat.
    let t = gate(", expired: adopt", "");
    let (d, mut rec) = t
        .ask(Some("junk"), Ask::Session(Counts::Activity), NOW)
        .await;
    let to_login = AppAnswer {
        location: Some("/login"),
        ..plain(302)
    };
    assert_eq!(
        t.answer(d, &to_login, &mut rec).await,
        Commit::Keep { holds: false }
    );
    assert_eq!(t.free(), Some(1));
    // The pool filled while the app answered: the answer is replaced by the denial.
    let (d, mut rec) = t
        .ask(Some("late"), Ask::Session(Counts::Activity), NOW)
        .await;
    t.logged_in("ann", "s1").await;
    let c = t.answer(d, &plain(200), &mut rec).await;
    assert!(matches!(c, Commit::Replace(Denial::Full { .. })));
    // With no seat free the request is denied before it reaches the app.
    let (d, _) = t
        .ask(Some("other"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::Full { offer: None, .. })
    ));
}

#[tokio::test]
async fn expired_sessions_go_to_the_login_page_and_failed_checks_are_denied() {
    let t = gate("", "");
    let (d, rec) = t
        .ask(Some("nope"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(d, Decision::Deny(Denial::Expired(Gone::Unknown))));
    assert_eq!(rec.denied(), Some("expired"));
    t.logged_in("ann", "s1").await;
    let (d, rec) = t.ask(None, Ask::Check, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::CheckFull { .. })));
    assert_eq!((rec.denied(), rec.check), (Some("check_full"), Some(false)));
}

#[tokio::test]
async fn store_errors_follow_on_store_error() {
    let closed = gate_on(down(), "", "    on_store_error: fail_closed\n");
    let (d, rec) = closed.login_as("ann", None).await;
    assert!(matches!(d, Decision::Deny(Denial::StoreError)));
    assert!(rec.store_error);
    assert_eq!(rec.denied(), Some("store_error"));
    let (d, _) = closed
        .ask(Some("s1"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(d, Decision::Deny(Denial::StoreError)));
    let (d, _) = closed.ask(None, Ask::Check, NOW).await;
    assert!(
        matches!(d, Decision::Deny(Denial::StoreError)),
        "no current view"
    );
    let open = gate_on(down(), "", "    on_store_error: fail_open\n");
    let (d, rec) = open.login_as("ann", None).await;
    assert!(matches!(d, Decision::Forward(Watch::Nothing)));
    assert!(rec.store_error && rec.denied().is_none());
    let (d, _) = open
        .ask(Some("s1"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(d, Decision::Forward(Watch::Nothing)));
    // `last_known` without a view fails closed.
    let last = gate_on(down(), "", "    on_store_error: last_known\n");
    let (d, _) = last
        .ask(Some("s1"), Ask::Session(Counts::Activity), NOW)
        .await;
    assert!(matches!(d, Decision::Deny(Denial::StoreError)));
}

#[tokio::test]
async fn heartbeats_answer_gone_hide_limited_ok_and_the_idle_warning() {
    let t = gate(", presence_timeout: 90s, idle_warning: 2m", "");
    let hide = Some("hint=hide");
    let (d, rec) = t.ask(None, Ask::Heartbeat, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::NoSeat)));
    assert_eq!(rec.heartbeat, Some(Beat::Gone));
    let (d, _) = t.ask(Some("nope"), Ask::Heartbeat, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::NoSeat)));
    t.logged_in("ann", "s1").await;
    // Its first request makes the standby seat active.
    let (d, _) = t.ask(Some("s1"), Ask::Session(Counts::Activity), NOW).await;
    assert!(matches!(d, Decision::Forward(Watch::Held(_))));
    let (d, rec) = t.ask_with(Some("s1"), Ask::Heartbeat, NOW, hide).await;
    assert!(matches!(
        d,
        Decision::Answer(Answer::Beat { idle_secs: None })
    ));
    assert_eq!(rec.heartbeat, Some(Beat::Hide));
    // Beats keep presence (90 s) but are no activity: the warning shows two minutes
    // before the idle end (ten minutes), counted once for the stretch of idleness.
    for m in 1..=9 {
        let (d, rec) = t.ask(Some("s1"), Ask::Heartbeat, NOW + m * MIN).await;
        let want = match m {
            8 => Some(120),
            9 => Some(60),
            _ => None,
        };
        assert!(
            matches!(d, Decision::Answer(Answer::Beat { idle_secs }) if idle_secs == want),
            "{m}: {d:?}"
        );
        assert_eq!(rec.idle_warning, m == 8, "{m}");
    }
    let later = NOW + 9 * MIN;
    let mut limited = None;
    for i in 0..30 {
        let (d, rec) = t.ask(Some("s1"), Ask::Heartbeat, later + 2 + i).await;
        if let Decision::Deny(Denial::TooManyBeats { retry_after_secs }) = d {
            limited = Some((rec.heartbeat, retry_after_secs));
            break;
        }
    }
    let (result, secs) = limited.expect("a flood is limited");
    assert_eq!(result, Some(Beat::Limited));
    assert!(secs >= 1);
}

#[tokio::test]
async fn heartbeat_store_errors_are_503_not_410() {
    let t = gate_on(down(), ", presence_timeout: 90s", "");
    let (d, rec) = t.ask(Some("s1"), Ask::Heartbeat, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::StoreError)));
    assert_eq!(rec.heartbeat, Some(Beat::Error));
}

/// The offer's first token, after ann (holding `s1`) logs in again at a full pool.
async fn offer(t: &T) -> String {
    let (d, _) = t.login_as("ann", None).await;
    let Decision::Verify(v) = d else {
        panic!("not verified at the app")
    };
    let mut rec = Record::default();
    let answer = Verdict::Session("s2".into());
    let got = t.gate.on_verified(t.p(), &v, answer, NOW, &mut rec).await;
    let Verified::Deny {
        denial: Denial::Full { offer: Some(o), .. },
        logout: true,
    } = got
    else {
        panic!("no offer: {got:?}")
    };
    assert_eq!(rec.self_service, Some(SelfServed::Offered));
    assert_eq!(o.sessions.len(), 1);
    o.sessions[0].token.clone()
}

#[tokio::test]
async fn self_service_offers_own_sessions_ends_one_and_holds_its_seat() {
    let t = gate("", "");
    t.logged_in("ann", "s1").await;
    let token = offer(&t).await;
    let body = format!("token={token}");
    fn post(b: &str) -> Ask<'_> {
        Ask::SelfService(Form::Body {
            is_form: true,
            body: b.as_bytes(),
        })
    }
    let (d, rec) = t.ask(None, post(&body), NOW).await;
    assert!(matches!(d, Decision::Answer(Answer::SelfServiceDone)));
    assert_eq!(rec.self_service, Some(SelfServed::Ended));
    assert!(matches!(
        rec.audit.as_deref(),
        Some(AuditEvent::SelfServiceEnd {
            held_until: Some(_),
            ..
        })
    ));
    // Used once only.
    let (d, _) = t.ask(None, post(&body), NOW).await;
    assert!(matches!(
        d,
        Decision::Deny(Denial::SelfService(Refusal::Token(TokenError::Spent)))
    ));
    // The freed seat waits for ann: bob finds the pool full, ann's next login takes it.
    let (d, _) = t.login_as("bob", None).await;
    assert!(matches!(d, Decision::Deny(Denial::Full { .. })));
    let (d, _) = t.login_as("ann", None).await;
    assert!(
        matches!(&d, Decision::Forward(Watch::Login(l)) if matches!(l.take, Take::Seat { held: Some(_), .. }))
    );
}

#[tokio::test]
async fn verified_logins_relay_the_app_or_say_it_is_unreachable() {
    let t = gate("", "");
    t.logged_in("ann", "s1").await;
    for (answer, want) in [
        (Verdict::NoSession, Verified::Relay { device: None }),
        (
            Verdict::Unreachable,
            Verified::Deny {
                denial: Denial::AppUnreachable,
                logout: false,
            },
        ),
    ] {
        let (d, _) = t.login_as("ann", None).await;
        let Decision::Verify(v) = d else { panic!() };
        let mut rec = Record::default();
        assert_eq!(
            t.gate.on_verified(t.p(), &v, answer, NOW, &mut rec).await,
            want
        );
        assert_eq!(rec.login, Some(LoginResult::Failed));
    }
    // A seat came free while the app checked the password: admitted.
    let (d, _) = t.login_as("ann", None).await;
    let Decision::Verify(v) = d else { panic!() };
    let (d, mut rec) = t.ask(Some("s1"), Ask::Logout, NOW).await;
    let _ = t.answer(d, &plain(200), &mut rec).await;
    let mut rec = Record::default();
    let got = t
        .gate
        .on_verified(t.p(), &v, Verdict::Session("s3".into()), NOW, &mut rec)
        .await;
    assert_eq!(got, Verified::Relay { device: None });
    assert_eq!(rec.login, Some(LoginResult::Admitted));
}

#[tokio::test]
async fn self_service_refuses_what_is_not_a_valid_form() {
    let t = gate("", "");
    let other_key = crate::policy::selfserve::TokenKey::random();
    let offer = crate::policy::selfserve::EndOffer {
        id: 1,
        product: "crm".into(),
        user: "ann".into(),
        seat: crate::domain::SeatId(1),
        pool: "default".into(),
        expires: NOW + MIN,
    };
    let forged = format!(
        "token={}",
        crate::policy::selfserve::sign(&other_key, &offer)
    );
    let cases: [(Form<'_>, Refusal); 5] = [
        (Form::NotPost, Refusal::NotPost),
        (Form::TooLarge, Refusal::TooLarge),
        (
            Form::Body {
                is_form: false,
                body: b"token=x",
            },
            Refusal::NotForm,
        ),
        (
            Form::Body {
                is_form: true,
                body: b"nothing=1",
            },
            Refusal::Token(TokenError::Malformed),
        ),
        (
            Form::Body {
                is_form: true,
                body: forged.as_bytes(),
            },
            Refusal::Token(TokenError::Forged),
        ),
    ];
    for (form, want) in cases {
        let (d, rec) = t.ask(None, Ask::SelfService(form), NOW).await;
        assert!(
            matches!(&d, Decision::Deny(Denial::SelfService(r)) if *r == want),
            "{want:?}"
        );
        assert_eq!(rec.outcome, Outcome::Answered);
    }
}

#[tokio::test]
async fn self_service_is_busy_rather_than_forget_a_used_token() {
    let mut t = gate("", "");
    t.gate = Gate::with_tokens(memory(), Tokens::with_caps(1, 1));
    t.gate
        .ledger()
        .configure(&crate::config::pool_specs(&t.cfg.products[0]));
    t.logged_in("ann", "s1").await;
    let first = format!("token={}", offer(&t).await);
    let second = format!("token={}", offer(&t).await);
    fn post(b: &str) -> Ask<'_> {
        Ask::SelfService(Form::Body {
            is_form: true,
            body: b.as_bytes(),
        })
    }
    let (d, _) = t.ask(None, post(&first), NOW).await;
    assert!(matches!(d, Decision::Answer(Answer::SelfServiceDone)));
    let (d, rec) = t.ask(None, post(&second), NOW).await;
    assert!(
        matches!(d, Decision::Deny(Denial::SelfService(Refusal::Busy))),
        "{d:?}"
    );
    assert_eq!(rec.self_service, None, "busy is not a token's fault");
}

/// A request of `t`'s product with a `Cookie` header.
async fn ask_with_cookie(t: &T, cookie: &str, ask: Ask<'_>, now: Millis) -> (Decision, Record) {
    let mut headers = form();
    headers.insert(http::header::COOKIE, HeaderValue::from_str(cookie).unwrap());
    let r = SeatRequest {
        product: t.p(),
        client: None,
        headers: &headers,
        query: None,
        session: None,
        now,
        tls: true,
        ask,
    };
    let mut rec = Record::default();
    let d = t.gate.on_request(&r, &mut rec).await;
    (d, rec)
}

fn ticket_of(d: &Decision) -> (String, QueueStatus) {
    let Decision::Answer(Answer::Waiting(w)) = d else {
        panic!("not the waiting page: {d:?}")
    };
    let value = w
        .set_cookie
        .strip_prefix("seatgate_queue=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    (value, w.status)
}

#[tokio::test]
async fn a_browser_refused_a_seat_waits_in_line_and_its_ticket_takes_the_held_seat() {
    let t = gate("", "    queue: { enabled: true, hold: 1m }\n");
    t.logged_in("ann", "s1").await;
    let login = |user: &'static str, cookie: String, now| {
        let t = &t;
        async move {
            let body = format!("username={user}");
            let ask = Ask::Login {
                body: Ok(Some(body.as_bytes())),
            };
            ask_with_cookie(t, &cookie, ask, now).await
        }
    };
    let (d, rec) = login("bob", String::new(), NOW).await;
    let (bob, s) = ticket_of(&d);
    assert_eq!(
        (s.position, s.state),
        (1, crate::domain::TicketState::Waiting)
    );
    assert_eq!(
        rec.outcome,
        Outcome::Denied(DenyReason::Full(crate::domain::FullReason::Pool))
    );
    let Decision::Answer(Answer::Waiting(w)) = &d else {
        panic!()
    };
    assert!(w
        .set_cookie
        .ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"));
    let (d, _) = login("cat", String::new(), NOW).await;
    let (cat, s) = ticket_of(&d);
    assert_eq!(s.position, 2);
    let poll = |cookie: String, now| {
        let t = &t;
        async move {
            ask_with_cookie(t, &cookie, Ask::Queue { get: true }, now)
                .await
                .0
        }
    };
    let bob_cookie = format!("seatgate_queue={bob}");
    // The seat frees: held for bob, not for cat, and not for a newcomer.
    t.gate
        .ledger()
        .release(&key("s1"), ReleaseReason::Logout, NOW + 1000)
        .await
        .unwrap();
    let d = poll(bob_cookie.clone(), NOW + 2000).await;
    assert!(
        matches!(d, Decision::Answer(Answer::Queue(Some(s))) if s.state == crate::domain::TicketState::Ready),
        "{d:?}"
    );
    assert!(matches!(
        poll(bob_cookie.clone(), NOW + 2100).await,
        Decision::Deny(Denial::QueueTooSoon {
            retry_after_secs: 1
        })
    ));
    let (d, _) = login("dan", String::new(), NOW + 2200).await;
    assert_eq!(ticket_of(&d).1.position, 3);
    let (d, _) = login("cat", format!("seatgate_queue={cat}"), NOW + 2200).await;
    // Cat's second login keeps cat's ticket and place.
    let (v, s) = ticket_of(&d);
    assert_eq!((v, s.position), (cat.clone(), 2));
    // Bob's wrong password keeps the hold; the right one takes the seat and clears the cookie.
    let (d, mut rec) = login("bob", bob_cookie.clone(), NOW + 3000).await;
    let c = t.answer(d, &plain(401), &mut rec).await;
    assert_eq!(c, Commit::Keep { holds: false });
    assert_eq!(t.free(), Some(0), "the hold is kept");
    let (d, mut rec) = login("bob", bob_cookie.clone(), NOW + 4000).await;
    let Commit::Admitted {
        clear_ticket: Some(clear),
        ..
    } = t.answer(d, &set("s2"), &mut rec).await
    else {
        panic!("bob takes the held seat")
    };
    assert!(
        clear.starts_with("seatgate_queue=; Path=/; Max-Age=0"),
        "{clear}"
    );
    assert!(matches!(
        poll(bob_cookie, NOW + 6000).await,
        Decision::Answer(Answer::Queue(None))
    ));
    // Anything else on the endpoint: no ticket is expired, other methods are refused.
    assert!(matches!(
        poll("seatgate_queue=junk".into(), NOW).await,
        Decision::Answer(Answer::Queue(None))
    ));
    let (d, _) = ask_with_cookie(&t, "", Ask::Queue { get: false }, NOW).await;
    assert!(matches!(d, Decision::Deny(Denial::QueueNotGet)));
}

#[tokio::test]
async fn without_a_line_a_full_pool_denial_says_when_to_retry() {
    let t = gate("", "");
    t.logged_in("ann", "s1").await;
    let (d, _) = t.login_as("bob", None).await;
    let Decision::Deny(Denial::Full {
        retry_after_secs, ..
    }) = d
    else {
        panic!("{d:?}")
    };
    assert!(retry_after_secs >= 1);
}
