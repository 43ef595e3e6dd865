//! Self-service from a full-pool denial (`policy::selfserve` holds the rules and tokens).
//!
//! A browser login of a user who already holds a seat of the pool is not denied blind: the
//! login goes to the app first ([`Decision::Verify`]; the app must check the password before
//! anything is offered), and with the app's answer ([`Gate::on_verified`])
//! * the app refuses → its answer goes back unchanged, no seat used;
//! * the app accepts and a seat is free by now → admitted as usual;
//! * the app accepts and still no seat → the new session never reaches the browser (it is
//!   logged out at the app in the background) and the denial page lists the user's own
//!   sessions, each with a signed single-use button for `POST …/.seatgate/self-service`,
//!   which ends that session ([`Gate::self_service`]) and holds its seat for the user.

use super::{
    Answer, AuditEvent, Decision, Denial, Form, Gate, LoginResult, OfferPage, OfferedSession,
    Outcome, Record, Refusal, SelfServed, Verdict, Verified, Verify,
};
use crate::config::Product;
use crate::domain::{
    Claim, EndOutcome, Full, Millis, PoolKey, Reservation, SeatRecord, SeatState, SessionKey,
};
use crate::policy::classify;
use crate::policy::selfserve::{self, EndOffer, Hold, Spend, TokenError};

impl Gate {
    /// The user's sessions whose end would free a seat for this login.
    pub(super) async fn own_sessions(
        &self,
        pool: &PoolKey,
        user: &str,
        now: Millis,
    ) -> Vec<SeatRecord> {
        match self.ledger.sessions(now).await {
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

    /// The app answered a login the gateway sent it for self-service.
    pub async fn on_verified(
        &self,
        p: &Product,
        v: &Verify,
        answer: Verdict,
        now: Millis,
        rec: &mut Record,
    ) -> Verified {
        let relay = |device| Verified::Relay { device };
        let value = match answer {
            Verdict::Unreachable => {
                rec.outcome = Outcome::Answered;
                rec.login = Some(LoginResult::Failed);
                return Verified::Deny {
                    denial: Denial::AppUnreachable,
                    logout: false,
                };
            }
            Verdict::NoSession => {
                // Wrong password (or any answer without a session): the app's own words.
                rec.outcome = Outcome::Forwarded;
                rec.login = Some(LoginResult::Failed);
                return relay(None);
            }
            Verdict::Session(v) => v,
        };
        // The app accepted. A seat may have come free while it checked.
        let retry = Claim {
            lease_id: rand::random(),
            ..v.claim.clone()
        };
        match self.ledger.reserve(&retry, now).await {
            Ok(Reservation::Granted(lease)) => {
                rec.outcome = Outcome::Forwarded;
                let key = SessionKey::of_cookie(&p.name, &value);
                match self.ledger.commit(&lease, &retry, key, now).await {
                    Ok(id) => {
                        rec.login = Some(LoginResult::Admitted);
                        rec.audit(AuditEvent::Admit {
                            seat: Some(id),
                            pool: retry.pool.pool,
                            user: retry.user,
                            client: retry.client,
                            reused: lease.reuse.is_some(),
                            kind: None,
                        });
                        relay(v.new_device.clone())
                    }
                    Err(e) => {
                        rec.login = Some(LoginResult::Failed);
                        log::warn!(
                            "product {}: login succeeded at the app but no seat: {e}",
                            p.name
                        );
                        relay(None)
                    }
                }
            }
            Ok(Reservation::Full(full)) => Verified::Deny {
                denial: self.offer(p, &v.claim, full, now, rec).await,
                logout: true,
            },
            Err(e) => match self.store_failed(p, &e, None, rec) {
                Some(denial) => Verified::Deny {
                    denial,
                    logout: true,
                },
                None => {
                    // `fail_open`: the login goes through without a seat, as it would have.
                    rec.login = Some(LoginResult::Failed);
                    relay(None)
                }
            },
        }
    }

    /// The denial page with the user's own sessions, each with its own signed choice.
    async fn offer(
        &self,
        p: &Product,
        claim: &Claim,
        full: Full,
        now: Millis,
        rec: &mut Record,
    ) -> Denial {
        rec.login = Some(LoginResult::Denied);
        let key = match self.tokens.key(self.ledger.as_ref()).await {
            Ok(k) => k,
            Err(e) => {
                // No way to sign an offer: the plain denial.
                log::warn!("product {}: no self-service key: {e}", p.name);
                return self.deny_full(claim, full, None, now, rec);
            }
        };
        let user = claim.user.clone().unwrap_or_default();
        let ttl = p.self_service.token_ttl.as_millis() as u64;
        let sessions = self
            .own_sessions(&claim.pool, &user, now)
            .await
            .into_iter()
            .map(|r| {
                let offer = EndOffer {
                    id: rand::random(),
                    product: p.name.clone(),
                    user: user.clone(),
                    seat: r.id,
                    pool: r.pool.pool.clone(),
                    expires: now + ttl,
                };
                OfferedSession {
                    started_at: r.started_at,
                    last_activity: r.last_activity,
                    client: r.client.clone(),
                    this_device: r.device.is_some() && r.device == claim.device,
                    device: r.device,
                    standby: r.state == SeatState::Standby,
                    token: selfserve::sign(&key, &offer),
                }
            })
            .collect();
        let offer = OfferPage {
            action: classify::self_service_path(&p.path_prefix),
            user,
            valid_secs: ttl / 1000,
            sessions,
        };
        rec.self_service = Some(SelfServed::Offered);
        self.deny_full(claim, full, Some(Box::new(offer)), now, rec)
    }

    /// `POST …/.seatgate/self-service` with `token=…`: ends the chosen own session and sends the
    /// browser back to the login page.
    pub(super) async fn self_service(
        &self,
        p: &Product,
        form: &Form<'_>,
        now: Millis,
        rec: &mut Record,
    ) -> Decision {
        rec.outcome = Outcome::Answered;
        let refuse = |r| Decision::Deny(Denial::SelfService(r));
        let body = match form {
            Form::NotPost => return refuse(Refusal::NotPost),
            Form::TooLarge => return refuse(Refusal::TooLarge),
            Form::Body { is_form: false, .. } => return refuse(Refusal::NotForm),
            Form::Body { body, .. } => *body,
        };
        let ledger = self.ledger.as_ref();
        let key = match self.tokens.key(ledger).await {
            Ok(k) => k,
            Err(e) => {
                log::warn!("product {}: no self-service key: {e}", p.name);
                return Decision::Deny(Denial::StoreError);
            }
        };
        let token = form_urlencoded::parse(body)
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
            Ok(o) => match self.tokens.spend(ledger, &o, now).await {
                Ok(Spend::First) => Ok(o),
                Ok(Spend::Again) => Err(TokenError::Spent),
                Ok(Spend::Busy) => {
                    crate::metrics::limit_reached("self_service_tokens");
                    return refuse(Refusal::Busy);
                }
                Err(e) => {
                    log::warn!("product {}: self-service token store error: {e}", p.name);
                    return Decision::Deny(Denial::StoreError);
                }
            },
            Err(e) => Err(e),
        };
        let offer = match checked {
            Ok(o) => o,
            Err(e) => {
                log::info!("product {}: self-service refused: {}", p.name, e.as_str());
                rec.self_service = Some(SelfServed::Refused(e));
                return refuse(Refusal::Token(e));
            }
        };
        let ended = match self.ledger.end(&[offer.seat], 0, &offer.user, now).await {
            Ok(v) => matches!(v.first().map(|(_, o)| *o), Some(EndOutcome::Ending { .. })),
            Err(e) => {
                self.tokens.refund(ledger, &offer).await;
                log::warn!("product {}: self-service end failed: {e}", p.name);
                return Decision::Deny(Denial::StoreError);
            }
        };
        let held = if ended {
            self.hold_freed_seat(p, &offer, now).await
        } else {
            None
        };
        let result = if ended {
            SelfServed::Ended
        } else {
            SelfServed::AlreadyGone
        };
        rec.audit(AuditEvent::SelfServiceEnd {
            seat: offer.seat,
            user: offer.user.clone(),
            result: result.as_str(),
            held_until: held.map(|h| h.until),
        });
        rec.self_service = Some(result);
        Decision::Answer(Answer::SelfServiceDone)
    }

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
        let ledger = self.ledger.as_ref();
        match ledger.hold(&claim, ttl, now).await {
            Ok(Reservation::Granted(lease)) if lease.reuse.is_none() => {
                let hold = Hold {
                    lease: lease.id,
                    until: now + ttl,
                };
                match self.put_hold(&pool, &offer.user, hold, now).await {
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
                ledger.cancel(&lease).await;
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
