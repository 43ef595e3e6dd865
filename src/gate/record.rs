//! What a request did, as values: the metric outcomes and audit events a decision produces.
//! The proxy keeps one [`Record`] per request and records it once, when the request is logged.

use crate::domain::{FullReason, Millis, SeatId};
use crate::policy::hostile::BadRequest;
use crate::policy::selfserve::TokenError;
use serde_json::{json, Value};

/// One request's outcomes. Small and allocation-free but for the (rare) audit event: it
/// lives in every request's context.
#[derive(Debug, Default, PartialEq)]
pub struct Record {
    pub outcome: Outcome,
    /// `seatgate_logins_total{result}`.
    pub login: Option<LoginResult>,
    /// `seatgate_store_errors_total` (policy from the product).
    pub store_error: bool,
    /// `seatgate_bad_requests_total{reason}`.
    pub bad_request: Option<BadReason>,
    /// `seatgate_requests_ignored_total`.
    pub ignored: bool,
    /// `seatgate_idle_warnings_total`: the first warning of a stretch of idleness.
    pub idle_warning: bool,
    /// `seatgate_heartbeats_total{result}`.
    pub heartbeat: Option<Beat>,
    /// `seatgate_self_service_total{result}`.
    pub self_service: Option<SelfServed>,
    /// A check's answer (pass or fail), counted per client kind.
    pub check: Option<bool>,
    /// The audit line this request writes.
    pub audit: Option<Box<AuditEvent>>,
}

impl Record {
    pub fn deny(&mut self, reason: DenyReason) {
        self.outcome = Outcome::Denied(reason);
    }

    pub fn audit(&mut self, e: AuditEvent) {
        self.audit = Some(Box::new(e));
    }

    /// The `reason` of the denial, if the request was denied.
    pub fn denied(&self) -> Option<&'static str> {
        match self.outcome {
            Outcome::Denied(r) => Some(r.as_str()),
            _ => None,
        }
    }
}

/// What the gateway did with the request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    #[default]
    Forwarded,
    Denied(DenyReason),
    CheckPassed,
    Answered,
}

/// The `reason` label of `seatgate_denials_total` (and the access log's `denied`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    NoProduct,
    BadRequest,
    StoreError,
    Expired,
    /// A failed check: counted through the product's pre-resolved series.
    CheckFull,
    Full(FullReason),
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoProduct => "no_product",
            DenyReason::BadRequest => "bad_request",
            DenyReason::StoreError => "store_error",
            DenyReason::Expired => "expired",
            DenyReason::CheckFull => "check_full",
            DenyReason::Full(r) => r.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Admitted,
    Failed,
    Denied,
    /// Unreadable: counted as `failed`.
    BadRequest,
}

impl LoginResult {
    /// The `result` label of `seatgate_logins_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Admitted => "admitted",
            LoginResult::Failed | LoginResult::BadRequest => "failed",
            LoginResult::Denied => "denied",
        }
    }
}

/// The `reason` label of `seatgate_bad_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReason {
    Hostile(BadRequest),
    AmbiguousSession,
    AmbiguousUser,
    BadLogin,
}

impl BadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BadReason::Hostile(b) => b.reason(),
            BadReason::AmbiguousSession => "ambiguous_session",
            BadReason::AmbiguousUser => "ambiguous_user",
            BadReason::BadLogin => "bad_login",
        }
    }
}

/// The `result` label of `seatgate_heartbeats_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Ok,
    Gone,
    Limited,
    Hide,
    Error,
}

impl Beat {
    pub fn as_str(self) -> &'static str {
        match self {
            Beat::Ok => "ok",
            Beat::Gone => "gone",
            Beat::Limited => "limited",
            Beat::Hide => "hide",
            Beat::Error => "error",
        }
    }
}

/// The `result` label of `seatgate_self_service_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfServed {
    Offered,
    Ended,
    AlreadyGone,
    Refused(TokenError),
}

impl SelfServed {
    pub fn as_str(self) -> &'static str {
        match self {
            SelfServed::Offered => "offered",
            SelfServed::Ended => "ended",
            SelfServed::AlreadyGone => "already_gone",
            SelfServed::Refused(e) => e.as_str(),
        }
    }
}

/// An audit line a decision produces. User names are raw here; the audit log hashes them
/// (`audit.hash_users`) when it writes the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    Admit {
        seat: Option<SeatId>,
        pool: String,
        user: Option<String>,
        client: String,
        reused: bool,
        /// `seat`, `exempt`, `named` or `relogin`; absent for a login verified for
        /// self-service.
        kind: Option<&'static str>,
    },
    Deny {
        pool: String,
        user: Option<String>,
        client: String,
        reason: &'static str,
        /// How many own sessions the self-service offer listed.
        offered: Option<usize>,
    },
    SelfServiceEnd {
        seat: SeatId,
        user: String,
        result: &'static str,
        held_until: Option<Millis>,
    },
}

impl AuditEvent {
    /// The event name and fields as the audit log writes them; `user` renders a user name
    /// (hashed or not).
    pub fn to_line(
        &self,
        product: &str,
        user: impl Fn(Option<&str>) -> Value,
    ) -> (&'static str, Value) {
        match self {
            AuditEvent::Admit {
                seat,
                pool,
                user: u,
                client,
                reused,
                kind,
            } => {
                let mut v = json!({"seat": seat.map(|i| i.to_string()), "product": product, "pool": pool,
                    "user": user(u.as_deref()), "client": client, "reused": reused});
                if let Some(k) = kind {
                    v["kind"] = json!(k);
                }
                ("admit", v)
            }
            AuditEvent::Deny {
                pool,
                user: u,
                client,
                reason,
                offered,
            } => {
                let mut v = json!({"product": product, "pool": pool, "user": user(u.as_deref()),
                    "client": client, "reason": reason});
                if let Some(n) = offered {
                    v["self_service_offered"] = json!(n);
                }
                ("deny", v)
            }
            AuditEvent::SelfServiceEnd {
                seat,
                user: u,
                result,
                held_until,
            } => (
                "self_service_end",
                json!({"product": product, "seat": seat.to_string(),
                    "user": user(Some(u)), "who": user(Some(u)), "result": result,
                    "held_until": held_until}),
            ),
        }
    }
}
