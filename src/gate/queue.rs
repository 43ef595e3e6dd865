//! The waiting line at the gate: a browser login refused for want of a seat joins the line of
//! its pool (the waiting page), its page polls `…/.seatgate/queue`, and the login carrying a
//! ready ticket finds the seat held for it. The line itself (order, holds, promotion) is the
//! ledger's; the cookie's shape and the poll's JSON are `policy::queue`'s.
//!
//! A ticket only ever lets `reserve` find the seat held for it: the login still goes to the
//! app, and the seat is taken only when the app accepts it. A ticket cookie that does not
//! parse, names another pool, or is unknown to the line is ignored: its request is a newcomer.

use super::{
    Answer, AuditEvent, Decision, Denial, DenyReason, Gate, Outcome, Record, SeatRequest, Waiting,
};
use crate::config::Product;
use crate::domain::{Claim, Full, Joined, Millis, Polled, QueueSpec, TicketKey};
use crate::policy::cookies;
use crate::policy::queue::{self, TICKET_COOKIE};

/// A ticket cookie the request carries, for the pool it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CarriedTicket {
    /// Index of its pool in the product's `pools`.
    pub pool: usize,
    pub value: String,
    pub key: TicketKey,
}

/// The request's ticket cookie, when it parses and names a pool of `p` whose line is on.
pub(super) fn carried(p: &Product, headers: &http::HeaderMap) -> Option<CarriedTicket> {
    let value = cookies::request_cookie(headers, TICKET_COOKIE)?;
    let name = queue::ticket_pool(value)?;
    let pool = p
        .pools
        .iter()
        .position(|x| x.name == name && x.queue.is_some())?;
    Some(CarriedTicket {
        pool,
        value: value.to_string(),
        key: TicketKey::new(&p.pool_keys[pool], value),
    })
}

/// How often the waiting page polls: well within `abandon_after` (a page that polls must never
/// be taken for abandoned), never faster than the line answers (`MIN_POLL_INTERVAL`), and at
/// most every 2 s.
pub fn poll_every(spec: &QueueSpec) -> Millis {
    (spec.abandon_after / 3).clamp(crate::domain::MIN_POLL_INTERVAL + 100, 2000)
}

impl Gate {
    /// A browser login refused for want of a seat, in a pool with a line: it joins (keeping
    /// its place when it already has a ticket there) and gets the waiting page; a full line
    /// gets the plain denial. `None`: the pool has no line.
    pub(super) async fn join(
        &self,
        r: &SeatRequest<'_>,
        claim: &Claim,
        full: Full,
        ticket: Option<CarriedTicket>,
        rec: &mut Record,
    ) -> Option<Decision> {
        let p = r.product;
        let pi = p.pool_keys.iter().position(|k| *k == claim.pool)?;
        let spec = p.pools[pi].queue?;
        // A ticket keeps its place only when the line knows it: a value the line never gave
        // (forged, or planted in the browser by someone else to take over its turn) is
        // replaced by a fresh one, so the cookie is always one the gateway chose.
        let known = match ticket {
            Some(t) if t.pool == pi => match self.ledger.poll(&claim.pool, &t.key, r.now).await {
                Ok(Polled::Status(_) | Polled::TooSoon { .. }) => Some(t.value),
                Ok(Polled::Unknown) | Err(_) => None,
            },
            _ => None,
        };
        let value = known.unwrap_or_else(|| queue::new_ticket(&p.pools[pi].name));
        let key = TicketKey::new(&claim.pool, &value);
        let joining = Claim {
            lease_id: key.lease_id(),
            ..claim.clone()
        };
        match self.ledger.enqueue(&joining, key, r.now).await {
            Ok(Joined::Queued(status)) => {
                // Counted and audited as the full-pool denial it is; the answer is the page.
                let _ = self.deny_full(claim, full, None, r.now, rec);
                let path = queue::ticket_path(&p.path_prefix);
                return Some(Decision::Answer(Answer::Waiting(Box::new(Waiting {
                    status,
                    set_cookie: queue::ticket_set_cookie(path, &value, r.tls),
                    poll_every: poll_every(&spec),
                }))));
            }
            Ok(Joined::LineFull) => {}
            // No line to join right now: the plain denial is still the truth.
            Err(e) => log::warn!("product {}: cannot join the waiting line: {e}", p.name),
        }
        Some(Decision::Deny(
            self.deny_full(claim, full, None, r.now, rec),
        ))
    }

    /// `GET …/.seatgate/queue`: where the request's ticket stands. A request without a ticket
    /// of this product's lines, or one the line does not know, is told `expired`.
    pub(super) async fn poll(&self, r: &SeatRequest<'_>, get: bool, rec: &mut Record) -> Decision {
        rec.outcome = Outcome::Answered;
        if !get {
            return Decision::Deny(Denial::QueueNotGet);
        }
        let p = r.product;
        let page = r.query.is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "view" && v == "page")
        });
        let t = carried(p, r.headers);
        let poll_every = t
            .as_ref()
            .and_then(|t| p.pools[t.pool].queue)
            .map_or(2000, |q| poll_every(&q));
        let answer = |status| {
            Decision::Answer(if page {
                Answer::QueuePage { status, poll_every }
            } else {
                Answer::Queue(status)
            })
        };
        let Some(t) = t else {
            return answer(None);
        };
        match self.ledger.poll(&p.pool_keys[t.pool], &t.key, r.now).await {
            Ok(Polled::Status(s)) => answer(Some(s)),
            Ok(Polled::Unknown) => answer(None),
            Ok(Polled::TooSoon { retry_after }) => Decision::Deny(Denial::QueueTooSoon {
                retry_after_secs: queue::retry_after_secs(Some(retry_after)),
            }),
            Err(e) => {
                log::warn!("product {}: waiting line poll failed: {e}", p.name);
                rec.store_error = e.is_store_failure();
                Decision::Deny(Denial::StoreError)
            }
        }
    }

    /// The login carrying `ticket` took its seat: the ticket leaves the line (a store error
    /// only delays that: a ticket nobody polls is abandoned). The answer deletes the cookie.
    pub(super) async fn ticket_done(
        &self,
        p: &Product,
        pool: &crate::domain::PoolKey,
        ticket: &TicketKey,
        tls: bool,
        now: Millis,
    ) -> String {
        if let Err(e) = self.ledger.queue_admitted(pool, ticket, now).await {
            log::warn!(
                "product {}: admitted ticket not removed from the line: {e}",
                p.name
            );
        }
        queue::ticket_clear_cookie(queue::ticket_path(&p.path_prefix), tls)
    }

    /// `Retry-After` of a full-pool denial: when a seat is likely free, from this gateway's
    /// view (no store round trip), at least a second.
    pub(super) fn retry_after(&self, pool: &crate::domain::PoolKey, now: Millis) -> u64 {
        queue::retry_after_secs(self.ledger.wait_estimate(pool, 1, now))
    }

    /// The pool-full denial of a login or adoption, with its audit line and its `Retry-After`.
    pub(super) fn deny_full(
        &self,
        claim: &Claim,
        full: Full,
        offer: Option<Box<super::OfferPage>>,
        now: Millis,
        rec: &mut Record,
    ) -> Denial {
        rec.deny(DenyReason::Full(full.reason));
        rec.audit(AuditEvent::Deny {
            pool: claim.pool.pool.clone(),
            user: claim.user.clone(),
            client: claim.client.clone(),
            reason: full.reason.as_str(),
            offered: offer.as_ref().map(|o| o.sessions.len()),
        });
        Denial::Full {
            full,
            offer,
            retry_after_secs: self.retry_after(&claim.pool, now),
        }
    }
}
