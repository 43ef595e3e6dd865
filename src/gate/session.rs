//! Requests of a session: its seat touched (or why it has none: the expired redirect, or
//! adoption), checks, heartbeats with the idle warning, activity decided by the response's
//! media type, and upgraded connections kept touched.

use super::{
    client_label, pool_for, pool_key, Answer, Beat, Decision, Denial, DenyReason, Gate, Held,
    Outcome, Record, SeatRequest, Watch,
};
use crate::config::{IdleBy, Product};
use crate::domain::{now_ms, Claim, Full, FullReason, Gone, Millis, SessionKey, Touch};
use crate::ledger::{LedgerError, SharedLedger};
use crate::policy::activity::{self, Counts};
use crate::policy::classify::{self, RequestFacts};
use crate::policy::seat::{self, Stale};
use crate::presence::{self, Verdict};
use http::HeaderMap;
use pingora_http::RequestHeader;

impl Gate {
    pub(super) async fn session(
        &self,
        r: &SeatRequest<'_>,
        key: SessionKey,
        counts: Counts,
        rec: &mut Record,
    ) -> Decision {
        let p = r.product;
        let activity = counts == Counts::Activity;
        let gone = match self.ledger.touch_as(&key, activity, r.now).await {
            Ok(Touch::Held { ending_at, .. }) => {
                let ignored = counts == Counts::Ignored;
                rec.ignored = ignored;
                return Decision::Forward(Watch::Held(Held {
                    key,
                    ending_at,
                    by_response: counts == Counts::ByResponse,
                    ignored,
                }));
            }
            Ok(Touch::Gone(g)) => g,
            Err(e) => {
                return match self.store_failed(p, &e, self.ledger.last_known(&key), rec) {
                    Some(d) => Decision::Deny(d),
                    None => Decision::Forward(Watch::Nothing),
                }
            }
        };
        match seat::on_stale(p.session.expired, gone) {
            Stale::RedirectToLogin => {
                rec.deny(DenyReason::Expired);
                Decision::Deny(Denial::Expired(gone))
            }
            Stale::Adopt => self.adopt(r, key, gone, rec),
        }
    }

    /// `expired: adopt`: a session the app still honours takes a free seat if there is one.
    /// Nothing is reserved before the app has answered: a cookie the app does not know (junk,
    /// forged, long expired) must never hold a seat, not even for the length of a request.
    /// With no seat free the request is denied before it reaches the app.
    fn adopt(
        &self,
        r: &SeatRequest<'_>,
        key: SessionKey,
        gone: Gone,
        rec: &mut Record,
    ) -> Decision {
        let p = r.product;
        let claim = Claim {
            pool: pool_key(p, pool_for(p, None, r.headers)).clone(),
            user: None,
            device: None,
            client: client_label(p, r.client).to_string(),
            // One lease id per cookie: concurrent requests of one browser adopting the same
            // cookie find the same reservation (reserve is idempotent by lease id, on every
            // replica) instead of racing for the last seat against themselves.
            lease_id: u64::from_le_bytes(key.0[..8].try_into().unwrap_or_default()) | 1,
        };
        match self.ledger.available(&claim.pool, r.now) {
            None => {
                let e = LedgerError::Unavailable("no current view of the pool".into());
                let d = self.store_failed(p, &e, None, rec);
                return d.map_or(Decision::Forward(Watch::Nothing), Decision::Deny);
            }
            Some(0) => {
                let full = full_now(p, &claim, r.now);
                return Decision::Deny(self.deny_full(&claim, full, None, r.now, rec));
            }
            Some(_) => {}
        }
        log::debug!(
            "product {}: {key:?} ({}) is adopted if the app accepts it",
            p.name,
            seat::notice(gone)
        );
        Decision::Forward(Watch::Adopt(key, Box::new(claim)))
    }

    /// A pass/fail availability check, from this gateway's view of the pool (no store call).
    pub(super) fn check(&self, r: &SeatRequest<'_>, rec: &mut Record) -> Decision {
        let p = r.product;
        let pool = pool_key(p, pool_for(p, None, r.headers));
        let Some(free) = self.ledger.available(pool, r.now) else {
            // No current view of the pool (store down past the stale bound): a check must
            // not pass on counts that may no longer be true.
            let e = LedgerError::Unavailable("no current view of the pool".into());
            let d = self.store_failed(p, &e, None, rec);
            return d.map_or(Decision::Forward(Watch::Nothing), Decision::Deny);
        };
        let pass = free > 0;
        rec.check = Some(pass);
        if pass {
            rec.outcome = Outcome::CheckPassed;
            Decision::Forward(Watch::Nothing)
        } else {
            rec.deny(DenyReason::CheckFull);
            Decision::Deny(Denial::CheckFull {
                retry_after_secs: self.retry_after(pool, r.now),
            })
        }
    }

    /// A presence ping. Unknown or ended sessions get 410 and nothing is touched; a flood
    /// from one session gets 429 before any store call; a `pagehide` hint is only counted (a
    /// closing tab must not extend its own presence). A store error is 503, not 410, so the
    /// script keeps beating through a store outage.
    pub(super) async fn heartbeat(
        &self,
        p: &Product,
        key: Option<SessionKey>,
        hint: bool,
        input: bool,
        now: Millis,
        rec: &mut Record,
    ) -> Decision {
        rec.outcome = Outcome::Answered;
        let period = presence::beat_period(p.session.presence_timeout);
        // Input counts only where the product asks for it (`idle_by: input`, the warning's
        // button); for an unknown or ended session it changes nothing (410 as ever).
        let input = activity::takes_input(&p.session) && input;
        let (result, d) = match key {
            None => (Beat::Gone, Decision::Deny(Denial::NoSeat)),
            Some(_) if hint => (
                Beat::Hide,
                Decision::Answer(Answer::Beat { idle_secs: None }),
            ),
            Some(k) => match self.limiter.check(&k, period, now) {
                Verdict::Limited { retry_after_ms } => (
                    Beat::Limited,
                    Decision::Deny(Denial::TooManyBeats {
                        retry_after_secs: retry_after_ms.div_ceil(1000),
                    }),
                ),
                Verdict::Allowed => match self.ledger.beat(&k, input, now).await {
                    Ok(Some(last_activity)) => {
                        self.limiter.record(k, period, now);
                        let idle_secs = self.idle_warning(p, k, last_activity, now, rec);
                        (Beat::Ok, Decision::Answer(Answer::Beat { idle_secs }))
                    }
                    Ok(None) => {
                        self.limiter.forget(&k);
                        (Beat::Gone, Decision::Deny(Denial::NoSeat))
                    }
                    Err(e) => {
                        log::warn!("product {}: heartbeat store error: {e}", p.name);
                        (Beat::Error, Decision::Deny(Denial::StoreError))
                    }
                },
            },
        };
        rec.heartbeat = Some(result);
        d
    }

    /// The seconds left while the idle warning is due; the first such answer of a stretch of
    /// idleness is counted.
    fn idle_warning(
        &self,
        p: &Product,
        k: SessionKey,
        last_activity: Millis,
        now: Millis,
        rec: &mut Record,
    ) -> Option<u64> {
        let secs = activity::idle_warning(&p.session, last_activity, now);
        match secs {
            Some(_) => rec.idle_warning = self.warned.first(k, last_activity),
            None => self.warned.clear(&k),
        }
        secs
    }

    /// A seat holder's request whose activity hinged on the response's media type: now known
    /// (`resp`: the response's headers).
    pub async fn on_response_type(
        &self,
        p: &Product,
        key: SessionKey,
        req: &RequestHeader,
        resp: &HeaderMap,
        rec: &mut Record,
    ) {
        let content_type = resp
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = classify::normalize_path(req.uri.path());
        let facts = RequestFacts::new(&req.method, &req.uri, &req.headers).with_path(&path);
        if activity::counts(&p.session, &facts, Some(content_type)) == Counts::Activity {
            if let Err(e) = self.ledger.touch_as(&key, true, now_ms()).await {
                log::debug!("product {}: activity not recorded: {e}", p.name);
            }
        } else {
            rec.ignored = true;
        }
    }

    /// The app switched protocols for a seat holder: touch the seat at a fraction of its idle
    /// timeout for as long as the connection lives (ended by an admin, it still ends).
    pub fn keep_touched(&self, p: &Product, key: SessionKey, ignored: bool) -> KeepTouched {
        let period = (p.session.idle_timeout / 3).clamp(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(60),
        );
        // An ignored socket (say, the app's notification channel) is kept valid, not active.
        let by_requests = p.session.idle_by == IdleBy::Requests && !ignored;
        KeepTouched(tokio::spawn(touch_while_open(
            self.ledger.clone(),
            key,
            period,
            by_requests,
        )))
    }
}

async fn touch_while_open(
    ledger: SharedLedger,
    key: SessionKey,
    period: std::time::Duration,
    by_requests: bool,
) {
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
}

/// A task touching a seat while its WebSocket (or other upgraded) connection is open: a
/// long-lived socket is activity even when no request comes. Stops when dropped.
pub struct KeepTouched(tokio::task::JoinHandle<()>);

impl Drop for KeepTouched {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pool's full answer as the gateway sees it without a reservation.
fn full_now(p: &Product, claim: &Claim, now: Millis) -> Full {
    let capacity = p
        .pools
        .iter()
        .zip(&p.pool_keys)
        .find(|(_, k)| **k == claim.pool)
        .map_or(0, |(pool, _)| pool.capacity(now));
    Full {
        in_use: capacity,
        capacity,
        reason: FullReason::Pool,
    }
}
