//! The one match from the gate's [`Denial`] (and its own [`Answer`]s) to the response the
//! gateway writes.

use super::{
    ambiguous_session, app_unreachable, bad_request, expired_redirect, full_page, gone, no_content,
    self_service_done, self_service_refused, too_many, unavailable, waiting_page, Canned, Denials,
    InLine, Offer,
};
use crate::config::Product;
use crate::domain::{Millis, QueueStatus};
use crate::gate::{builtin_page, Answer, Denial, OfferPage, Refusal};
use crate::policy::seat;
use http::{HeaderValue, StatusCode};
use std::borrow::Cow;

/// The header of the idle warning's seconds on the heartbeat's answer.
const IDLE_HEADER: http::HeaderName =
    http::HeaderName::from_static(crate::presence::script::IDLE_HEADER);

/// The answer to a denial of a request of `p` (`None`: no product matched) by client kind
/// `client`; `denials` are the product's pool-full answers of the request's config snapshot.
/// Those are borrowed, not cloned: a check storm at a full pool allocates nothing for them.
pub fn render<'a>(
    d: &Denial,
    p: Option<&Product>,
    denials: Option<&'a Denials>,
    client: Option<usize>,
    now: Millis,
) -> Cow<'a, Canned> {
    let owned = |c: Canned| Cow::Owned(c);
    let Some(p) = p else {
        return owned(match d {
            Denial::Refused(bad) => refused(bad.status(), bad.message()),
            _ => Canned::text(StatusCode::NOT_FOUND, "No application is served here."),
        });
    };
    let configured = || match denials {
        Some(d) => Cow::Borrowed(d.get(client)),
        // Not reached: a denial comes after the proxy has the snapshot and product.
        None => Cow::Owned(Denials::new(p).get(client).clone()),
    };
    match d {
        Denial::NoProduct => owned(Canned::text(
            StatusCode::NOT_FOUND,
            "No application is served here.",
        )),
        Denial::Refused(bad) => owned(refused(bad.status(), bad.message())),
        Denial::BadLogin(bad) => owned(bad_request(bad.status(), &bad.message())),
        Denial::AmbiguousSession => {
            owned(ambiguous_session(&p.session.cookie, &p.session.cookie_path))
        }
        Denial::StoreError => owned(unavailable()),
        // Borrowed: the estimate's `Retry-After` is set as the answer is sent
        // (`retry_after_of`), so a check storm or a login storm at a full pool copies no answer.
        Denial::CheckFull { .. } => configured(),
        Denial::Full { full, offer, .. } if builtin_page(p, client) => {
            let offer = offer.as_deref().map(offer_of);
            owned(full_page(&configured(), &p.name, full, offer.as_ref(), now))
        }
        Denial::Full { .. } => configured(),
        Denial::Expired(gone) => owned(expired_redirect(
            &p.login.path,
            &p.session.cookie,
            &p.session.cookie_path,
            seat::notice(*gone),
        )),
        Denial::AppUnreachable => owned(app_unreachable(&p.name)),
        Denial::NoSeat => owned(gone("no seat for this session")),
        Denial::TooManyBeats { retry_after_secs } => {
            owned(too_many("too many heartbeats", *retry_after_secs))
        }
        Denial::SelfService(r) => owned(self_service(p, *r)),
        Denial::QueueNotGet => owned(
            Canned::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "The waiting line is read with GET.",
            )
            .header(http::header::ALLOW, HeaderValue::from_static("GET")),
        ),
        Denial::QueueTooSoon { retry_after_secs } => {
            owned(too_many("polled again too soon", *retry_after_secs))
        }
    }
}

/// The `Retry-After` to set on `d`'s answer as it is sent, over any configured one: the wait
/// estimate of a full pool's denial and of a failed check, whose configured answers `render`
/// lends unchanged.
pub fn retry_after_of(d: &Denial) -> Option<u64> {
    match d {
        Denial::CheckFull { retry_after_secs }
        | Denial::Full {
            retry_after_secs, ..
        } => Some(*retry_after_secs),
        _ => None,
    }
}

/// The waiting line's answers: the poll's JSON, and its page without script.
fn queue_answer(p: &Product, status: Option<&QueueStatus>, page: Option<Millis>) -> Canned {
    match page {
        None => Canned::new(
            StatusCode::OK,
            "application/json",
            crate::policy::queue::status_json(status, &p.name),
        ),
        Some(poll_every) => waiting_page(&InLine {
            product: &p.name,
            status,
            poll: &crate::policy::classify::queue_path(&p.path_prefix),
            login: &p.login.path,
            poll_every,
            refresh_only: true,
        }),
    }
}

/// The gateway's own answers that deny nothing.
pub fn answer(a: &Answer, p: &Product) -> Canned {
    match a {
        Answer::Beat { idle_secs: None } => no_content(),
        Answer::Beat {
            idle_secs: Some(secs),
        } => no_content().header_str(IDLE_HEADER, &secs.to_string()),
        Answer::SelfServiceDone => self_service_done(&p.name, &p.login.path),
        Answer::Queue(status) => queue_answer(p, status.as_ref(), None),
        Answer::QueuePage { status, poll_every } => {
            queue_answer(p, status.as_ref(), Some(*poll_every))
        }
        Answer::Waiting(w) => waiting_page(&InLine {
            product: &p.name,
            status: Some(&w.status),
            poll: &crate::policy::classify::queue_path(&p.path_prefix),
            login: &p.login.path,
            poll_every: w.poll_every,
            refresh_only: false,
        })
        .header_str(http::header::SET_COOKIE, &w.set_cookie),
    }
}

/// A request refused before classification: the connection is closed after it.
fn refused(status: StatusCode, why: &str) -> Canned {
    bad_request(status, why).header_str(http::header::CONNECTION, "close")
}

fn self_service(p: &Product, r: Refusal) -> Canned {
    let refuse = |status, why: &str| self_service_refused(status, &p.name, why, &p.login.path);
    match r {
        Refusal::NotPost => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "This address only accepts the buttons of the license page.",
        )
        .header(http::header::ALLOW, HeaderValue::from_static("POST")),
        Refusal::TooLarge => refuse(StatusCode::PAYLOAD_TOO_LARGE, "This request is too large."),
        Refusal::NotForm => refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This request must be a form (application/x-www-form-urlencoded).",
        ),
        Refusal::Busy => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The license gateway is busy. Please try again in a minute.",
        )
        .header(http::header::RETRY_AFTER, HeaderValue::from_static("60")),
        Refusal::Token(e) => refuse(e.status(), e.message()),
    }
}

fn offer_of(o: &OfferPage) -> Offer<'_> {
    Offer {
        user: &o.user,
        action: &o.action,
        valid_secs: o.valid_secs,
        sessions: &o.sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Full, FullReason, Gone};
    use crate::policy::classify::BadLogin;
    use crate::policy::hostile::BadRequest;
    use crate::policy::selfserve::TokenError;

    fn product() -> std::sync::Arc<Product> {
        let yaml = "listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
store: { kind: embedded, path: /tmp/x.redb }
products:
  - name: crm
    upstream: 127.0.0.1:3
    session: { cookie: SID, idle_timeout: 10m, max_lifetime: 1h }
    login: { path: /login, method: POST, user: { form_field: username } }
    seats: 1
    clients:
      - kind: api
        match: { path_prefix: /api }
        on_full: { status: 429, body: busy }
";
        let c = crate::config::parse(yaml).unwrap();
        c.products[0].clone()
    }

    #[test]
    fn every_denial_has_its_answer() {
        let p = product();
        let d = Denials::new(&p);
        let full = Full {
            in_use: 1,
            capacity: 1,
            reason: FullReason::Pool,
        };
        let cases = [
            (Denial::NoProduct, None, 404),
            (
                Denial::Refused(BadRequest::all()[0]),
                None,
                BadRequest::all()[0].status().as_u16(),
            ),
            (Denial::BadLogin(BadLogin::NotUtf8), None, 400),
            (Denial::AmbiguousSession, None, 400),
            (Denial::StoreError, None, 503),
            (
                Denial::CheckFull {
                    retry_after_secs: 9,
                },
                Some(0),
                429,
            ),
            (
                Denial::Full {
                    full,
                    offer: None,
                    retry_after_secs: 7,
                },
                Some(0),
                429,
            ),
            (
                Denial::Full {
                    full,
                    offer: None,
                    retry_after_secs: 7,
                },
                None,
                d.get(None).status.as_u16(),
            ),
            (Denial::Expired(Gone::Unknown), None, 302),
            (Denial::AppUnreachable, None, 502),
            (Denial::NoSeat, None, 410),
            (
                Denial::TooManyBeats {
                    retry_after_secs: 3,
                },
                None,
                429,
            ),
            (Denial::SelfService(Refusal::NotPost), None, 405),
            (Denial::SelfService(Refusal::TooLarge), None, 413),
            (Denial::SelfService(Refusal::NotForm), None, 415),
            (Denial::SelfService(Refusal::Busy), None, 503),
            (
                Denial::SelfService(Refusal::Token(TokenError::Spent)),
                None,
                410,
            ),
        ];
        for (denial, client, status) in cases {
            let c = render(&denial, Some(&p), Some(&d), client, 0);
            assert_eq!(c.status.as_u16(), status, "{denial:?}");
        }
        // A configured answer is the prebuilt one, not a copy.
        let check = Denial::CheckFull {
            retry_after_secs: 9,
        };
        let c = render(&check, Some(&p), Some(&d), Some(0), 0);
        assert!(matches!(c, Cow::Borrowed(_)));
        assert_eq!(retry_after_of(&check), Some(9));
        let h = c.to_header_with(retry_after_of(&check)).unwrap();
        let ra: Vec<_> = h
            .headers
            .get_all(http::header::RETRY_AFTER)
            .iter()
            .collect();
        assert_eq!(ra, ["9"], "one Retry-After, the estimate's");
        // A full pool's configured answer (client kind 0 has a body) likewise.
        let api = Denial::Full {
            full,
            offer: None,
            retry_after_secs: 7,
        };
        let c = render(&api, Some(&p), Some(&d), Some(0), 0);
        assert!(matches!(c, Cow::Borrowed(_)));
        assert_eq!(retry_after_of(&api), Some(7));
        // Refused requests close the connection; without a product only what needs none.
        let bad = BadRequest::all()[0];
        let c = render(&Denial::Refused(bad), None, None, None, 0);
        assert!(c
            .headers
            .iter()
            .any(|(k, v)| k == http::header::CONNECTION && v == "close"));
        assert_eq!(render(&Denial::NoProduct, None, None, None, 0).status, 404);
        let beat = answer(&Answer::Beat { idle_secs: Some(5) }, &p);
        assert_eq!(beat.status, 204);
        assert!(beat
            .headers
            .iter()
            .any(|(k, v)| *k == IDLE_HEADER && v == "5"));
        assert_eq!(answer(&Answer::SelfServiceDone, &p).status, 303);
    }
}
