//! Logins: who the user is, which pool and device, whether the login takes a seat at all
//! (exempt and named users, re-logins do not), a held self-service seat, and the full pool.

use super::{
    builtin_page, client_label, pool_for, pool_key, Decision, Gate, LoginResult, PendingLogin,
    Record, SeatRequest, Take, Verify, Watch,
};
use crate::config::Product;
use crate::domain::{
    Claim, Full, FullReason, Lookup, Millis, PoolKey, Reservation, SeatState, SeatsPer, SessionKey,
    TicketKey, Touch,
};
use crate::policy::classify::{self, BadLogin};
use crate::policy::cookies;
use crate::policy::selfserve::{self, FullLogin, Hold};

impl Gate {
    pub(super) async fn login(
        &self,
        r: &SeatRequest<'_>,
        body: Result<Option<&[u8]>, BadLogin>,
        rec: &mut Record,
    ) -> Decision {
        let p = r.product;
        let now = r.now;
        let user = body
            .and_then(|b| classify::login_user(&p.login.user, r.headers, b.unwrap_or_default()));
        let user = match user {
            Ok(u) => u,
            Err(bad) => return Decision::Deny(super::bad_login(p, bad, rec)),
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
        let (device, new_device) = device_of(p, r.headers);
        let pi = pool_for(p, user.as_deref(), r.headers);
        let pool = pool_key(p, pi).clone();
        // A ticket of another pool (or product) is no ticket here: the login is a newcomer.
        let ticket = super::queue::carried(p, r.headers).filter(|t| t.pool == pi);
        let tk = ticket.as_ref().map(|t| t.key);
        let client = client_label(p, r.client).to_string();
        // A re-login moves the browser's seat; an exempt or named user takes none. Either way
        // nothing is reserved: the app's answer decides.
        let relogin = match r.session {
            Some(old) if self.holds_for(&old, user.as_deref(), now).await => {
                Some(Take::Relogin(old))
            }
            _ => None,
        };
        if let Some(take) = relogin.or(uncounted.map(Take::Uncounted)) {
            let claim = Claim {
                pool,
                user,
                device,
                client,
                lease_id: 0,
            };
            return login_waits(claim, new_device, take, tk, r.tls);
        }
        // A seat this user freed by self-service waits for them under its own lease id (with
        // Redis, one more store call per login while self-service is on).
        let held = match user.as_deref() {
            Some(u) if p.self_service.enabled => {
                self.tokens
                    .take_hold(self.ledger.as_ref(), &pool, u, now)
                    .await
            }
            _ => None,
        };
        let claim = Claim {
            pool,
            user,
            device,
            client,
            // A ready ticket's seat is held under the ticket's own lease id.
            lease_id: match (held, tk) {
                (Some(h), _) => h.lease,
                (None, Some(k)) => k.lease_id(),
                (None, None) => rand::random(),
            },
        };
        match self.ledger.reserve(&claim, now).await {
            Ok(Reservation::Granted(lease)) => {
                login_waits(claim, new_device, Take::Seat { lease, held }, tk, r.tls)
            }
            Ok(Reservation::Full(full)) => {
                self.login_full(r, claim, full, new_device, ticket, rec)
                    .await
            }
            Err(e) => {
                let free = self.ledger.available(&claim.pool, now).map(|n| n > 0);
                match self.store_failed(p, &e, free, rec) {
                    Some(d) => Decision::Deny(d),
                    None => Decision::Forward(Watch::Nothing),
                }
            }
        }
    }

    /// Whether `session` holds a seat (or an uncounted session) of `user`, or of no one in
    /// particular: then a login from that browser is a re-login and moves that seat. Any
    /// doubt (store error, another user's seat) makes it an ordinary login.
    async fn holds_for(&self, session: &SessionKey, user: Option<&str>, now: Millis) -> bool {
        let Ok(Touch::Held { id, .. }) = self.ledger.touch(session, now).await else {
            return false;
        };
        match self.ledger.lookup(id, now).await {
            Ok(Lookup::Live(rec)) => rec.user.is_none() || rec.user.as_deref() == user,
            _ => false,
        }
    }

    /// A login refused by the ledger for lack of a seat: denied, or verified at the app first
    /// when its user may free one of their own seats.
    async fn login_full(
        &self,
        r: &SeatRequest<'_>,
        claim: Claim,
        full: Full,
        new_device: Option<String>,
        ticket: Option<super::queue::CarriedTicket>,
        rec: &mut Record,
    ) -> Decision {
        let p = r.product;
        let html = builtin_page(p, r.client);
        let enabled = p.self_service.enabled;
        let own = match claim.user.as_deref() {
            Some(u) if enabled && html => self.own_sessions(&claim.pool, u, r.now).await.len(),
            _ => 0,
        };
        match selfserve::on_full(enabled, html, claim.user.as_deref(), own) {
            FullLogin::Deny => {
                rec.login = Some(LoginResult::Denied);
                // A browser waits in line (when its pool has one); waiting cannot help a user
                // at their own session limit.
                if html && full.reason != FullReason::UserMax {
                    if let Some(d) = self.join(r, &claim, full, ticket, rec).await {
                        return d;
                    }
                }
                Decision::Deny(self.deny_full(&claim, full, None, r.now, rec))
            }
            FullLogin::VerifyThenOffer => Decision::Verify(Box::new(Verify { claim, new_device })),
        }
    }

    /// A login that took no seat: its reservation goes, unless it was a seat held for its user
    /// (a mistyped password must not cost the hold), which is held again until its time is up.
    /// The seat held for a ready ticket is kept by the ledger itself (`cancel` leaves it until
    /// `ready_until`), while a reservation a ticket's login got at once (barging) goes.
    pub(super) async fn drop_lease(&self, login: PendingLogin, now: Millis) {
        let Take::Seat { lease, held } = login.take else {
            return;
        };
        if let (Some(h), Some(user)) = (held, login.claim.user.as_deref()) {
            if h.until > now && self.put_hold(&login.claim.pool, user, h, now).await.is_ok() {
                return;
            }
        }
        self.ledger.cancel(&lease).await;
    }

    /// Holds a seat for `user` (`Tokens::put_hold`); a hold it replaces gives its
    /// reservation back at once.
    pub(super) async fn put_hold(
        &self,
        pool: &PoolKey,
        user: &str,
        hold: Hold,
        now: Millis,
    ) -> Result<(), String> {
        let ledger = self.ledger.as_ref();
        if let Some(old) = self.tokens.put_hold(ledger, pool, user, hold, now).await? {
            ledger.cancel(&old).await;
        }
        Ok(())
    }
}

fn login_waits(
    claim: Claim,
    new_device: Option<String>,
    take: Take,
    ticket: Option<TicketKey>,
    tls: bool,
) -> Decision {
    Decision::Forward(Watch::Login(Box::new(PendingLogin {
        claim,
        new_device,
        take,
        ticket,
        tls,
    })))
}

/// The browser's device under `seats_per: user_device`, and the new id to give it when it
/// came without a valid one.
fn device_of(p: &Product, headers: &http::HeaderMap) -> (Option<String>, Option<String>) {
    if !matches!(p.seats_per, SeatsPer::UserDevice) {
        return (None, None);
    }
    match cookies::request_cookie(headers, &p.session.device_cookie)
        .filter(|d| cookies::valid_device(d))
    {
        Some(d) => (Some(d.to_string()), None),
        None => {
            let d = cookies::new_device_id();
            (Some(d.clone()), Some(d))
        }
    }
}
