//! The app's answer: a login's cookie binds its seat, the app's word on a known cookie
//! releases or moves its seat, a configured logout releases only once the app accepts it,
//! and an adopted cookie takes a seat only once the app has accepted it.

use super::{
    AppAnswer, AuditEvent, Commit, Denial, DenyReason, Gate, LoginResult, PendingLogin, Record,
    Take, Watch,
};
use crate::config::Product;
use crate::domain::{Claim, Millis, ReleaseReason, Reservation, SessionKey, Touch};
use crate::policy::classify;
use crate::policy::cookies::CookieWord;

impl Gate {
    /// What the app's answer to a forwarded request changes. `watch` is what the decision
    /// asked to watch; a login or an adoption is settled (and no longer watched) after it.
    pub async fn on_app_answer(
        &self,
        p: &Product,
        watch: &mut Watch,
        a: &AppAnswer<'_>,
        now: Millis,
        rec: &mut Record,
    ) -> Commit {
        let (key, logout, holds) = match &*watch {
            Watch::Nothing => return Commit::Keep { holds: false },
            Watch::Session(k) => (*k, false, false),
            Watch::Held(h) => (h.key, false, true),
            Watch::Logout(k) => (*k, true, false),
            Watch::Login(_) | Watch::Adopt(..) => return self.settle(p, watch, a, now, rec).await,
        };
        let released = self.app_word(p, key, logout, a, now).await;
        Commit::Keep {
            holds: holds && !released,
        }
    }

    /// A login or an adoption meets the app's answer; what is watched after it is at most
    /// the adopted cookie. Both are boxed: rare, and larger than a seat holder's answer.
    async fn settle(
        &self,
        p: &Product,
        watch: &mut Watch,
        a: &AppAnswer<'_>,
        now: Millis,
        rec: &mut Record,
    ) -> Commit {
        match std::mem::take(watch) {
            Watch::Login(login) => Box::pin(self.login_answer(p, *login, a, now, rec)).await,
            Watch::Adopt(key, claim) => {
                *watch = Watch::Session(key);
                Box::pin(self.adopt_answer(p, key, &claim, a, now, rec)).await
            }
            other => {
                *watch = other;
                Commit::Keep { holds: false }
            }
        }
    }

    /// The app answered a login: bind the reserved seat to the session cookie it set, or drop
    /// the reservation when it set none.
    async fn login_answer(
        &self,
        p: &Product,
        login: PendingLogin,
        a: &AppAnswer<'_>,
        now: Millis,
        rec: &mut Record,
    ) -> Commit {
        let failed = Commit::Keep { holds: false };
        let value = match (&a.word, &login.take) {
            (Some(CookieWord::Set(v)), _) => v.clone(),
            (word, Take::Seat { .. }) => {
                rec.login = Some(LoginResult::Failed);
                if let Some(CookieWord::Deleted) = word {
                    log::debug!(
                        "product {}: failed login deleted the session cookie",
                        p.name
                    );
                }
                self.drop_lease(login, now).await;
                return failed;
            }
            (Some(CookieWord::Deleted), Take::Relogin(old)) => {
                rec.login = Some(LoginResult::Failed);
                self.release_quietly(p, old, ReleaseReason::AppLogout, now)
                    .await;
                return failed;
            }
            (_, _) => {
                // A failed login from a browser that still holds its old session keeps it.
                rec.login = Some(LoginResult::Failed);
                return failed;
            }
        };
        let key = SessionKey::of_cookie(&p.name, &value);
        let PendingLogin {
            claim,
            new_device,
            take,
            ticket,
            tls,
        } = login;
        let ledger = &self.ledger;
        let done = match &take {
            Take::Seat { lease, .. } => ledger.commit(lease, &claim, key, now).await.map(Some),
            Take::Uncounted(state) => ledger
                .admit_uncounted(&claim, *state, key, now)
                .await
                .map(Some),
            Take::Relogin(old) if *old == key => Ok(None),
            Take::Relogin(old) => ledger.rekey(old, key, now).await,
        };
        match done {
            Ok(seat) => {
                rec.login = Some(LoginResult::Admitted);
                let clear_ticket = match ticket {
                    Some(t) => Some(self.ticket_done(p, &claim.pool, &t, tls, now).await),
                    None => None,
                };
                let (kind, reused) = match &take {
                    Take::Seat { lease, .. } => ("seat", lease.reuse.is_some()),
                    Take::Uncounted(state) => (state.as_str(), false),
                    Take::Relogin(_) => ("relogin", true),
                };
                rec.audit(AuditEvent::Admit {
                    seat,
                    pool: claim.pool.pool,
                    user: claim.user,
                    client: claim.client,
                    reused,
                    kind: Some(kind),
                });
                Commit::Admitted {
                    device: new_device,
                    clear_ticket,
                }
            }
            Err(e) => {
                // The app accepted the login but no seat could be bound: the next
                // request with that cookie is treated as a stale session.
                rec.login = Some(LoginResult::Failed);
                log::warn!(
                    "product {}: login succeeded at the app but no seat: {e}",
                    p.name
                );
                if let Take::Seat { lease, .. } = &take {
                    ledger.cancel(lease).await;
                }
                failed
            }
        }
    }

    /// The app answered a request of a session the gateway knows (or a configured logout):
    /// its own word on the session cookie decides. Deleting it releases the seat
    /// (`app_logout`), a new value moves the seat to it, and a configured logout releases
    /// only when the app accepts it. Says whether the seat was released.
    async fn app_word(
        &self,
        p: &Product,
        key: SessionKey,
        logout: bool,
        a: &AppAnswer<'_>,
        now: Millis,
    ) -> bool {
        let reason = match (logout, &a.word) {
            (true, Some(CookieWord::Deleted)) => Some(ReleaseReason::Logout),
            (true, _) if a.status.as_u16() < 400 => Some(ReleaseReason::Logout),
            (true, _) => None,
            (false, Some(CookieWord::Deleted)) => Some(ReleaseReason::AppLogout),
            (false, Some(CookieWord::Set(v))) => {
                let new = SessionKey::of_cookie(&p.name, v);
                if new != key {
                    if let Err(e) = self.ledger.rekey(&key, new, now).await {
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
        let Some(reason) = reason else {
            return false;
        };
        self.release_quietly(p, &key, reason, now).await;
        true
    }

    /// `expired: adopt`: the app answered the cookie. Accepted, it takes a seat now, or, when
    /// the pool filled while the app answered, the answer is replaced by the full-pool denial.
    async fn adopt_answer(
        &self,
        p: &Product,
        key: SessionKey,
        claim: &Claim,
        a: &AppAnswer<'_>,
        now: Millis,
        rec: &mut Record,
    ) -> Commit {
        let deleted = a.word == Some(CookieWord::Deleted);
        if !classify::app_accepts_session(a.status, a.location, &p.login.path, deleted) {
            return Commit::Keep { holds: false };
        }
        let key = match &a.word {
            Some(CookieWord::Set(v)) => SessionKey::of_cookie(&p.name, v),
            _ => key,
        };
        let ledger = &self.ledger;
        let held = Commit::Keep { holds: true };
        // Several requests of one browser race with one cookie: whichever answer comes first
        // adopts it, the others find it held (before their reservation, or after it found the
        // pool full because of that very seat).
        let is_held = || async { matches!(ledger.touch(&key, now).await, Ok(Touch::Held { .. })) };
        if is_held().await {
            return held;
        }
        match ledger.reserve(claim, now).await {
            Ok(Reservation::Granted(lease)) => match ledger.commit(&lease, claim, key, now).await {
                Ok(id) => {
                    log::debug!("product {}: adopted {key:?} as {id}", p.name);
                    return held;
                }
                Err(e) => {
                    ledger.cancel(&lease).await;
                    log::warn!("product {}: adoption not recorded: {e}", p.name);
                }
            },
            Ok(Reservation::Full(_)) if is_held().await => return held,
            Ok(Reservation::Full(full)) => {
                return Commit::Replace(self.deny_full(claim, full, None, now, rec));
            }
            Err(e) => log::warn!("product {}: adoption not recorded: {e}", p.name),
        }
        rec.deny(DenyReason::StoreError);
        Commit::Replace(Denial::StoreError)
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
        if let Err(e) = self.ledger.release(key, reason, now).await {
            log::warn!(
                "product {}: {} not recorded, the seat ends at idle timeout: {e}",
                p.name,
                reason.as_str()
            );
        }
    }
}
