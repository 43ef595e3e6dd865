//! The API's writes: end, pause and resume sessions, reload the config. Permission checks are
//! all-or-nothing over a batch, so a batch never half-applies for want of a permission.

use super::auth::Principal;
use super::rbac::{self, Action, Refusal};
use super::views::{rfc3339, ticket_json};
use super::wire::{error, json_response, parse_json, store_error};
use super::AdminService;
use crate::domain::{now_ms, EndOutcome, Lookup, PauseOutcome, SeatId, SeatRecord, SeatState};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};

const MAX_IDS: usize = 1000;
const DEFAULT_GRACE_SECONDS: u64 = 30;
const MAX_GRACE_SECONDS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndRequest {
    ids: Vec<String>,
    #[serde(default)]
    grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsRequest {
    ids: Vec<String>,
}

/// Session ids from a request: 1 to [`MAX_IDS`], each a valid id, duplicates dropped.
fn parse_ids(raw: &[String]) -> Result<Vec<SeatId>, String> {
    if raw.is_empty() || raw.len() > MAX_IDS {
        return Err("`ids` must list 1 to 1000 session ids".into());
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(raw.len());
    for r in raw {
        let id = r
            .parse::<SeatId>()
            .map_err(|()| format!("`{r}` is not a session id"))?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum PauseOp {
    Pause,
    Resume,
}

/// One session's result of a pause or resume, and the status it asks for. Asking for the
/// state a session is already in is no error; `was` is its state in the listing.
fn pause_result(
    op: PauseOp,
    outcome: PauseOutcome,
    was: Option<SeatState>,
) -> (&'static str, StatusCode) {
    match (op, outcome) {
        (PauseOp::Pause, PauseOutcome::Done) => ("paused", StatusCode::OK),
        (PauseOp::Resume, PauseOutcome::Done) => ("resumed", StatusCode::OK),
        (PauseOp::Resume, PauseOutcome::Full) => ("full", StatusCode::CONFLICT),
        (PauseOp::Pause, PauseOutcome::WrongState) if was == Some(SeatState::Paused) => {
            ("already_paused", StatusCode::OK)
        }
        (PauseOp::Resume, PauseOutcome::WrongState)
            if matches!(was, Some(SeatState::Active | SeatState::Standby)) =>
        {
            ("already_active", StatusCode::OK)
        }
        (_, PauseOutcome::WrongState | PauseOutcome::Full) => ("wrong_state", StatusCode::CONFLICT),
        (_, PauseOutcome::NotFound) => ("not_found", StatusCode::NOT_FOUND),
    }
}

/// The `error` line of a pause or resume batch answered with `status` (not 200).
fn pause_error(op: PauseOp, status: StatusCode) -> &'static str {
    match status {
        StatusCode::CONFLICT if op == PauseOp::Resume => {
            "no seat is free to resume (or the session is ending)"
        }
        StatusCode::CONFLICT => "a session being ended cannot be paused",
        _ => "session ended meanwhile",
    }
}

fn unknown(id: &SeatId) -> Response<Vec<u8>> {
    error(StatusCode::NOT_FOUND, &format!("unknown session {id}"))
}

impl AdminService {
    pub(super) async fn end(&self, who: &Principal, body: &[u8]) -> Response<Vec<u8>> {
        let req: EndRequest = match parse_json(body, "{\"ids\": [..], \"grace_seconds\": N}") {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let ids = match parse_ids(&req.ids) {
            Ok(ids) => ids,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let grace = req.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > MAX_GRACE_SECONDS {
            return error(
                StatusCode::BAD_REQUEST,
                "`grace_seconds` must be at most 86400",
            );
        }
        let now = now_ms();
        let list = match self.list().await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let mut by_id: HashMap<SeatId, SeatRecord> = list.into_iter().map(|s| (s.id, s)).collect();
        // A session missing from the listing is looked up without touching it: it may have
        // ended (409), never existed (404), or started since the listing, when it gets the
        // same permission checks as any other. Validation never ends anything.
        for id in &ids {
            if by_id.contains_key(id) {
                continue;
            }
            match self.app.ledger.lookup(*id, now).await {
                Ok(Lookup::Live(rec)) => {
                    by_id.insert(*id, rec);
                }
                Ok(Lookup::Ended) if rbac::may_know_ended(who) => {
                    return error(StatusCode::CONFLICT, &format!("already ended {id}"))
                }
                Ok(Lookup::Ended | Lookup::Unknown) => return unknown(id),
                Err(e) => return store_error(e),
            }
        }
        for id in &ids {
            match by_id.get(id).map(|s| rbac::check(who, Action::End, s)) {
                Some(Ok(())) => {}
                Some(Err(Refusal::Forbidden)) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        &format!("not allowed to end session {id}"),
                    )
                }
                Some(Err(Refusal::Unknown)) | None => return unknown(id),
            }
        }
        match self
            .app
            .ledger
            .end(&ids, grace * 1000, &who.name, now)
            .await
        {
            Ok(results) => {
                let mut out = Vec::new();
                for (id, o) in results {
                    let (state, at) = match o {
                        EndOutcome::Ending { at } => ("ending", Some(rfc3339(at))),
                        EndOutcome::AlreadyEnded => ("already_ended", None),
                        EndOutcome::NotFound => ("not_found", None),
                    };
                    if let (Some(s), EndOutcome::Ending { .. }) = (by_id.get(&id), o) {
                        let mut f = self.app.audit.seat_fields(s);
                        f["by"] = json!(who.name);
                        f["grace_seconds"] = json!(grace);
                        self.app.audit.record("end", f);
                    }
                    out.push(json!({"id": id.to_string(), "result": state, "ends_at": at}));
                }
                json_response(StatusCode::OK, &json!({ "ended": out }))
            }
            Err(e) => store_error(e),
        }
    }

    pub(super) async fn pause_resume(
        &self,
        who: &Principal,
        body: &[u8],
        op: PauseOp,
    ) -> Response<Vec<u8>> {
        let req: IdsRequest = match parse_json(body, "{\"ids\": [..]}") {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let ids = match parse_ids(&req.ids) {
            Ok(ids) => ids,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let list = match self.list().await {
            Ok(l) => l,
            Err(r) => return r,
        };
        let by_id: HashMap<SeatId, &SeatRecord> = list.iter().map(|s| (s.id, s)).collect();
        for id in &ids {
            match by_id.get(id).map(|s| rbac::check(who, Action::Pause, s)) {
                Some(Ok(())) => {}
                Some(Err(Refusal::Forbidden)) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        &format!(
                            "session {id}: only its owner, with permission control, may pause or resume it"
                        ),
                    );
                }
                Some(Err(Refusal::Unknown)) | None => return unknown(id),
            }
        }
        let now = now_ms();
        let mut out = Vec::new();
        let mut status = StatusCode::OK;
        for id in &ids {
            let r = match op {
                PauseOp::Pause => self.app.ledger.pause(*id, now).await,
                PauseOp::Resume => self.app.ledger.resume(*id, now).await,
            };
            let outcome = match r {
                Ok(o) => o,
                Err(e) => return store_error(e),
            };
            let (result, code) = pause_result(op, outcome, by_id.get(id).map(|s| s.state));
            if code != StatusCode::OK && status == StatusCode::OK {
                status = code;
            }
            out.push(json!({"id": id.to_string(), "result": result}));
        }
        let mut body = json!({ "results": out });
        if status != StatusCode::OK {
            body["error"] = json!(pause_error(op, status));
        }
        json_response(status, &body)
    }

    /// Removes one ticket from its line (`DELETE /api/queue/{id}`, `POST
    /// /api/queue/{id}/remove`), with the permission ending a session of its product and user
    /// would need. Its page then reads `expired`; a ready ticket's held seat goes to the next.
    pub(super) async fn remove_ticket(&self, who: &Principal, raw: &str) -> Response<Vec<u8>> {
        let Ok(id) = raw.parse::<SeatId>() else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "`{}` is not a ticket id",
                    raw.chars().take(40).collect::<String>()
                ),
            );
        };
        let now = now_ms();
        let line = match self.app.ledger.queue(now).await {
            Ok(l) => l,
            Err(e) => return store_error(e),
        };
        let gone = || error(StatusCode::NOT_FOUND, &format!("unknown ticket {id}"));
        let Some(ticket) = line.iter().find(|t| t.id == id) else {
            return gone();
        };
        match rbac::check_remove_ticket(who, ticket) {
            Ok(()) => {}
            Err(Refusal::Forbidden) => {
                return error(
                    StatusCode::FORBIDDEN,
                    &format!("not allowed to remove ticket {id}"),
                )
            }
            Err(Refusal::Unknown) => return gone(),
        }
        match self.app.ledger.remove_ticket(id, now).await {
            Ok(Some(t)) => {
                // The ledger's `queue_leave` (result `removed`) says what left; this says who.
                let mut f = self.app.audit.ticket_fields(&t);
                f["by"] = json!(who.name);
                self.app.audit.record("queue_remove", f);
                json_response(StatusCode::OK, &json!({ "removed": ticket_json(&t) }))
            }
            // Left the line between the listing and now (admitted, abandoned, expired).
            Ok(None) => gone(),
            Err(e) => store_error(e),
        }
    }

    pub(super) fn reload(&self, who: &Principal) -> Response<Vec<u8>> {
        if !rbac::may_reload(who) {
            return error(
                StatusCode::FORBIDDEN,
                "reload needs role super with permission control",
            );
        }
        match self.app.reload() {
            Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
            Err(e) => {
                log::error!("reload refused: {e}");
                self.app.audit.record(
                    "config_reload_refused",
                    json!({"by": who.name, "error": e.to_string()}),
                );
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("reload refused, old config kept: {e}"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_valid_and_deduplicated() {
        let ids = parse_ids(&["a".into(), "0a".into(), "b".into()]).unwrap();
        assert_eq!(ids, vec![SeatId(10), SeatId(11)]);
        assert!(parse_ids(&[]).is_err());
        assert_eq!(
            parse_ids(&["xyz".into()]).unwrap_err(),
            "`xyz` is not a session id"
        );
        assert!(parse_ids(&vec!["1".to_string(); MAX_IDS + 1]).is_err());
    }

    #[test]
    fn pause_and_resume_results() {
        use PauseOp::{Pause, Resume};
        use PauseOutcome::{Done, Full, NotFound, WrongState};
        use SeatState::{Active, Ending, Paused, Standby};
        let (ok, conflict, gone) = (StatusCode::OK, StatusCode::CONFLICT, StatusCode::NOT_FOUND);
        let table = [
            (Pause, Done, Some(Active), "paused", ok),
            (Resume, Done, Some(Paused), "resumed", ok),
            (Resume, Full, Some(Paused), "full", conflict),
            (Pause, WrongState, Some(Paused), "already_paused", ok),
            (Pause, WrongState, Some(Ending), "wrong_state", conflict),
            (Resume, WrongState, Some(Active), "already_active", ok),
            (Resume, WrongState, Some(Standby), "already_active", ok),
            (Resume, WrongState, Some(Ending), "wrong_state", conflict),
            (Pause, Full, Some(Active), "wrong_state", conflict),
            (Pause, NotFound, Some(Active), "not_found", gone),
            (Resume, NotFound, None, "not_found", gone),
        ];
        for (op, outcome, was, result, status) in table {
            assert_eq!(
                pause_result(op, outcome, was),
                (result, status),
                "{op:?} {outcome:?} {was:?}"
            );
        }
        assert_eq!(
            pause_error(Resume, conflict),
            "no seat is free to resume (or the session is ending)"
        );
        assert_eq!(
            pause_error(Pause, conflict),
            "a session being ended cannot be paused"
        );
        assert_eq!(pause_error(Pause, gone), "session ended meanwhile");
    }
}
