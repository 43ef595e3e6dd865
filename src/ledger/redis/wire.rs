//! The wire codec: seats and answers as the script writes them (JSON), and the pool spec as it
//! reads it. Parsing is strict: an unknown kind, state or reason fails the answer
//! ([`LedgerError::Corrupt`]) instead of reading as a default.

use super::*;

/// A seat as the script stores it (JSON; empty strings and 0 stand for "none").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Rec {
    pub(super) id: SeatId,
    #[serde(default)]
    pub(super) user: String,
    #[serde(default)]
    pub(super) device: String,
    #[serde(default)]
    pub(super) client: String,
    #[serde(default)]
    pub(super) session: String,
    #[serde(deserialize_with = "de_u64")]
    pub(super) started_at: u64,
    #[serde(deserialize_with = "de_u64")]
    pub(super) last_activity: u64,
    #[serde(deserialize_with = "de_u64")]
    pub(super) last_heartbeat: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) last_request: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) last_input: u64,
    pub(super) state: SeatState,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) ending_at: u64,
    #[serde(default)]
    pub(super) overflow: bool,
    #[serde(default)]
    pub(super) ended_by: String,
}

/// Lua numbers are doubles and cjson may print them as such; a negative, non-finite or too
/// large one (past u64, which a cast would silently saturate) is no count or time of the
/// script's and is refused.
pub(super) fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = f64::deserialize(d)?;
    // `u64::MAX as f64` is 2^64, the first value that does not fit.
    if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
        Ok(v as u64)
    } else {
        Err(serde::de::Error::custom(format!(
            "`{v}` is not a count or time"
        )))
    }
}

/// cjson encodes an empty Lua table as `{}`: accept it for an empty list.
pub(super) fn de_seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SeqOrMap<T> {
        Seq(Vec<T>),
        Map(#[allow(dead_code)] serde_json::Map<String, serde_json::Value>),
    }
    Ok(match SeqOrMap::<T>::deserialize(d)? {
        SeqOrMap::Seq(v) => v,
        SeqOrMap::Map(_) => Vec::new(),
    })
}

#[derive(Deserialize, Debug)]
pub(super) struct Released {
    pub(super) seat: Rec,
    pub(super) reason: ReleaseReason,
}

/// What the script answered; an unknown kind fails the parse.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    #[default]
    Ok,
    Granted,
    Full,
    Seat,
    Lost,
    Gone,
    Held,
    Skip,
    None,
    Released,
    Ended,
    NotFound,
    WrongState,
    Done,
    Live,
    Unknown,
    View,
    List,
    /// The line is at `max_length` (or the pool keeps none): not joined.
    LineFull,
    /// In line: the answer's `status`.
    Queued,
    TooSoon,
    /// A ticket that left the line: the answer's `ticket`.
    Ticket,
    Line,
}

/// An admin end's answer per seat.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum EndWhat {
    Ending,
    AlreadyEnded,
    NotFound,
}

/// One seat of an admin end's answer: its id, what became of it, and when it ends.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EndOut(
    pub(super) SeatId,
    pub(super) EndWhat,
    #[serde(deserialize_with = "de_u64")] pub(super) u64,
);

/// Why a cookie holds no seat, as `touch` and `heartbeat` answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GoneWhy {
    Unknown,
    Paused,
    Released(ReleaseReason),
}

pub(super) fn parse_gone(s: &str) -> Result<GoneWhy, LedgerError> {
    match s {
        "unknown" => Ok(GoneWhy::Unknown),
        "paused" => Ok(GoneWhy::Paused),
        r => r.parse().map(GoneWhy::Released).map_err(corrupt),
    }
}

#[derive(Deserialize, Debug, Default)]
pub(super) struct Answer {
    pub(super) kind: Kind,
    #[serde(default)]
    pub(super) reuse: Option<SeatId>,
    #[serde(default)]
    pub(super) overflow: bool,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) in_use: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) capacity: u64,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) id: Option<SeatId>,
    #[serde(default)]
    pub(super) epoch: Option<String>,
    #[serde(default)]
    pub(super) seat: Option<Rec>,
    /// The seat a paused session took again (resume, or a request from it).
    #[serde(default)]
    pub(super) resumed: Option<Rec>,
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) released: Vec<Released>,
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) out: Vec<EndOut>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) now: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) held: u64,
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) seats: Vec<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) pending: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) peak: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) denied: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) overflow_ms: u64,
    /// Until when a released cookie's reason is remembered (the latest release wins when
    /// several pools remember one cookie).
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) gone_until: u64,
    /// The cookie a login's reused seat moved away from (its cached entry is stale).
    #[serde(default)]
    pub(super) replaced: Option<String>,
    /// What the call did to the pool's waiting line, for the observer.
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) line: Vec<LineEvent>,
    /// A joined or polled ticket's status.
    #[serde(default)]
    pub(super) status: Option<StatusRec>,
    /// A ticket that left (admitted, removed).
    #[serde(default)]
    pub(super) ticket: Option<TicketRec>,
    /// The line as listed.
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) tickets: Vec<TicketRec>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) retry_after: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) queue_length: u64,
    /// Waiting tickets that keep newcomers back (barging off; lapsed ones left out).
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) waiting: u64,
    /// The earliest deadlines of the seats that count (a few), earliest first.
    #[serde(default, deserialize_with = "de_seq")]
    pub(super) earliest: Vec<Ms>,
    /// Releases of counted seats in the last hour, and when the pool's first was (0: never).
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) releases: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) since: u64,
}

/// A count or time on its own (in a list): read as strictly as a field.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ms(#[serde(deserialize_with = "de_u64")] pub(super) u64);

/// A ticket as the script tells it (never its lease id).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub(super) struct TicketRec {
    pub(super) id: SeatId,
    pub(super) key: String,
    #[serde(default)]
    pub(super) user: String,
    #[serde(default)]
    pub(super) client: String,
    #[serde(deserialize_with = "de_u64")]
    pub(super) joined_at: u64,
    #[serde(deserialize_with = "de_u64")]
    pub(super) last_poll: u64,
    pub(super) state: TicketState,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) ready_until: u64,
    #[serde(deserialize_with = "de_u64")]
    pub(super) position: u64,
}

/// What happened to a ticket, as the script tells it.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum LineEv {
    Joined,
    Ready,
    Left,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
pub(super) struct LineEvent {
    pub(super) ticket: TicketRec,
    pub(super) ev: LineEv,
    /// Why it left; only `left` has one.
    #[serde(default)]
    pub(super) result: Option<QueueResult>,
    #[serde(deserialize_with = "de_u64")]
    pub(super) at: u64,
}

/// A ticket's status as the script answers a join or a poll; a waiting one's with what its
/// wait estimate reads.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub(super) struct StatusRec {
    pub(super) id: SeatId,
    pub(super) state: TicketState,
    #[serde(deserialize_with = "de_u64")]
    pub(super) position: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) ready_until: u64,
    #[serde(deserialize_with = "de_u64")]
    pub(super) length: u64,
    /// Seats it needs freed: the waiting tickets up to it.
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) needed: u64,
    /// The deadline of the `needed`-th seat to end, if that many seats are held.
    #[serde(default)]
    pub(super) deadline: Option<Ms>,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) releases: u64,
    #[serde(default, deserialize_with = "de_u64")]
    pub(super) since: u64,
}

/// A count the domain keeps as u32 (positions, lengths): a larger one is refused.
fn count32(what: &str, v: u64) -> Result<u32, LedgerError> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} {v} out of range")))
}

/// A ready ticket has the time its seat is held until; a waiting one has none.
fn ready_until(state: TicketState, at: u64) -> Result<Option<Millis>, LedgerError> {
    match (state, at) {
        (TicketState::Ready, 0) => Err(corrupt("ready ticket without ready_until")),
        (TicketState::Ready, t) => Ok(Some(t)),
        (TicketState::Waiting, _) => Ok(None),
    }
}

/// A ticket key as the script stores it: the 32 lowercase hex digits `TicketKey::hex` wrote
/// (`from_hex` alone also takes uppercase digits).
pub(super) fn parse_ticket_key(s: &str) -> Result<TicketKey, LedgerError> {
    TicketKey::from_hex(s)
        .filter(|k| k.hex() == s)
        .ok_or_else(|| corrupt(format!("bad ticket key `{s}`")))
}

impl TicketRec {
    pub(super) fn ticket(&self, pool: &PoolKey) -> Result<Ticket, LedgerError> {
        Ok(Ticket {
            id: self.id,
            key: parse_ticket_key(&self.key)?,
            pool: pool.clone(),
            user: opt(&self.user),
            client: self.client.clone(),
            joined_at: self.joined_at,
            last_poll: self.last_poll,
            state: self.state,
            ready_until: ready_until(self.state, self.ready_until)?,
            position: count32("position", self.position)?,
        })
    }
}

impl LineEvent {
    pub(super) fn event(&self) -> Result<QueueEvent, LedgerError> {
        match (self.ev, self.result) {
            (LineEv::Joined, None) => Ok(QueueEvent::Joined),
            (LineEv::Ready, None) => Ok(QueueEvent::Ready),
            (LineEv::Left, Some(r)) => Ok(QueueEvent::Left(r)),
            (ev, r) => Err(corrupt(format!("queue event {ev:?} with result {r:?}"))),
        }
    }
}

/// The release count's window from the pool's `since` as the script keeps it (0: no release
/// yet).
pub(super) fn rate_window(since: u64, now: Millis) -> Millis {
    crate::policy::queue::rate_window((since != 0).then_some(since), now)
}

impl StatusRec {
    pub(super) fn status(&self, now: Millis) -> Result<QueueStatus, LedgerError> {
        let estimated_wait = match self.state {
            TicketState::Ready => Some(0),
            TicketState::Waiting => estimate_at(
                self.deadline.map(|d| d.0),
                count32("needed", self.needed)?.max(1),
                self.releases,
                rate_window(self.since, now),
                now,
            ),
        };
        Ok(QueueStatus {
            id: self.id,
            state: self.state,
            position: count32("position", self.position)?,
            estimated_wait,
            ready_until: ready_until(self.state, self.ready_until)?,
            length: count32("length", self.length)?,
        })
    }
}

/// A joined or polled ticket's status, as of the answer's time.
pub(super) fn status_of(a: &Answer) -> Result<QueueStatus, LedgerError> {
    a.status
        .as_ref()
        .ok_or_else(|| corrupt("no status"))?
        .status(a.now)
}

/// The pool spec as the script reads it.
#[derive(Serialize)]
pub(super) struct SpecJson<'a> {
    grants: Vec<GrantJson>,
    idle_timeout: u64,
    max_lifetime: u64,
    presence_timeout: Option<u64>,
    standby_timeout: u64,
    seats_per: &'static str,
    max_sessions: Option<u32>,
    groups: Vec<GroupJson<'a>>,
    overflow_ms: Option<u64>,
    queue: Option<QueueJson>,
}

#[derive(Serialize)]
pub(super) struct QueueJson {
    hold: u64,
    abandon_after: u64,
    max_wait: u64,
    max_length: u32,
    barging: bool,
}

#[derive(Serialize)]
pub(super) struct GrantJson {
    seats: u32,
    not_before: Option<u64>,
    expires: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct GroupJson<'a> {
    users: Vec<&'a str>,
    reserve: u32,
    max: Option<u32>,
}

pub(super) fn spec_json(spec: &PoolSpec) -> String {
    let mut groups: Vec<GroupJson> = spec
        .groups
        .iter()
        .map(|g| {
            let mut users: Vec<&str> = g.users.iter().map(String::as_str).collect();
            users.sort_unstable();
            GroupJson {
                users,
                reserve: g.reserve,
                max: g.max,
            }
        })
        .collect();
    groups.shrink_to_fit();
    let j = SpecJson {
        grants: spec
            .grants
            .iter()
            .map(|g| GrantJson {
                seats: g.seats,
                not_before: g.not_before,
                expires: g.expires,
            })
            .collect(),
        idle_timeout: spec.idle_timeout,
        max_lifetime: spec.max_lifetime,
        presence_timeout: spec.presence_timeout,
        standby_timeout: spec.standby_timeout,
        seats_per: match spec.seats_per {
            SeatsPer::Session => "session",
            SeatsPer::User => "user",
            SeatsPer::UserDevice => "user_device",
        },
        max_sessions: spec.max_sessions,
        groups,
        overflow_ms: spec.overflow_ms,
        queue: spec.queue.map(|q| QueueJson {
            hold: q.hold,
            abandon_after: q.abandon_after,
            max_wait: q.max_wait,
            max_length: q.max_length,
            barging: q.barging,
        }),
    };
    serde_json::to_string(&j).unwrap_or_default()
}

/// `{prefix:product:pool}`: braces in names would break the hash tag, so they are replaced.
pub(super) fn pool_tag(prefix: &str, key: &PoolKey) -> String {
    let clean = |s: &str| s.replace(['{', '}'], "_");
    format!(
        "{{{}:{}:{}}}",
        prefix,
        clean(&key.product),
        clean(&key.pool)
    )
}

pub(super) fn pool_keys(prefix: &str, key: &PoolKey) -> Vec<String> {
    let tag = pool_tag(prefix, key);
    [
        "z", "seats", "sess", "pend", "pinfo", "gone", "gonez", "stats", "paused", "ended", "unc",
        "ixmeta", "ixuser", "ixseat", "ixover", "ixlease", "qz", "qt", "qwait", "qpoll", "qjoin",
        "qready", "qid", "qrate",
    ]
    .iter()
    .map(|s| format!("{tag}:{s}"))
    .collect()
}

/// A `full` answer's reason; one without a reason is refused like an unknown one.
pub(super) fn parse_full(s: Option<&str>) -> Result<FullReason, LedgerError> {
    s.unwrap_or_default().parse().map_err(corrupt)
}

/// A session key as the script stores it: empty for none, else 32 hex digits.
pub(super) fn parse_session(s: &str) -> Result<Option<SessionKey>, LedgerError> {
    if s.is_empty() {
        return Ok(None);
    }
    // Only the spelling the store writes (lowercase), like ticket keys: another one is damage.
    SessionKey::from_hex(s)
        .filter(|k| k.hex() == s)
        .map(Some)
        .ok_or_else(|| corrupt(format!("bad session key `{s}`")))
}

/// A `list` answer's seats (the pool's stored records): one that cannot be read fails the
/// listing rather than going missing from it.
pub(super) fn seats_of(a: &Answer) -> Result<Vec<Rec>, LedgerError> {
    a.seats
        .iter()
        .map(|raw| {
            serde_json::from_str::<Rec>(raw).map_err(|e| corrupt(format!("stored seat: {e}")))
        })
        .collect()
}

pub(super) fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Rec {
    pub(super) fn times(&self) -> SeatTimes {
        SeatTimes {
            started_at: self.started_at,
            last_activity: self.last_activity,
            last_heartbeat: self.last_heartbeat,
            state: self.state,
            ending_at: (self.ending_at > 0).then_some(self.ending_at),
        }
    }

    pub(super) fn record(&self, pool: &PoolKey) -> Result<SeatRecord, LedgerError> {
        let t = self.times();
        Ok(SeatRecord {
            id: self.id,
            pool: pool.clone(),
            user: opt(&self.user),
            device: opt(&self.device),
            client: self.client.clone(),
            session: parse_session(&self.session)?,
            started_at: self.started_at,
            last_activity: self.last_activity,
            last_heartbeat: self.last_heartbeat,
            last_request: self.last_request,
            last_input: self.last_input,
            state: t.state,
            ending_at: t.ending_at,
            overflow: self.overflow,
            ended_by: opt(&self.ended_by),
        })
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Unavailable(format!("redis: {e}"))
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(format!("redis: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::queue::RATE_WINDOW;

    fn answer(json: &str) -> Result<Answer, serde_json::Error> {
        serde_json::from_str(json)
    }

    const REC: &str = r#"{"id":"00000000000000a1","session":"","started_at":1,"last_activity":2,"last_heartbeat":0,"state":"active"}"#;

    #[test]
    fn a_known_answer_reads() {
        let a = answer(&format!(
            r#"{{"kind":"held","seat":{REC},"released":{{}},"out":[["00000000000000a1","ending",5]]}}"#
        ))
        .unwrap();
        assert_eq!(a.kind, Kind::Held);
        let seat = a.seat.unwrap();
        assert_eq!(seat.id, SeatId(0xa1));
        assert_eq!(seat.state, SeatState::Active);
        assert_eq!(a.out, vec![EndOut(SeatId(0xa1), EndWhat::Ending, 5)]);
        assert_eq!(seat.record(&PoolKey::new("p", "q")).unwrap().session, None);
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        assert!(answer(r#"{"kind":"granted_maybe"}"#).is_err());
    }

    #[test]
    fn an_unknown_seat_state_is_refused() {
        let rec = REC.replace("\"active\"", "\"actve\"");
        assert!(serde_json::from_str::<Rec>(&rec).is_err());
    }

    #[test]
    fn an_unknown_release_reason_is_refused() {
        let a = format!(r#"{{"kind":"ok","released":[{{"seat":{REC},"reason":"tired"}}]}}"#);
        assert!(answer(&a).is_err());
    }

    #[test]
    fn an_unknown_end_outcome_is_refused() {
        assert!(answer(r#"{"kind":"ended","out":[["00000000000000a1","maybe",0]]}"#).is_err());
        assert!(answer(r#"{"kind":"ended","out":[["00000000000000a1","ending",-5]]}"#).is_err());
    }

    #[test]
    fn a_bad_seat_id_is_refused() {
        let rec = REC.replace("00000000000000a1", "seat-one");
        assert!(serde_json::from_str::<Rec>(&rec).is_err());
        assert!(answer(r#"{"kind":"seat","id":"xyz"}"#).is_err());
    }

    #[test]
    fn a_negative_or_fractional_count_is_read_strictly() {
        assert!(answer(r#"{"kind":"view","held":-1}"#).is_err());
        assert_eq!(answer(r#"{"kind":"view","held":3.0}"#).unwrap().held, 3);
    }

    #[test]
    fn an_unknown_gone_reason_is_refused() {
        assert_eq!(parse_gone("unknown").unwrap(), GoneWhy::Unknown);
        assert_eq!(parse_gone("paused").unwrap(), GoneWhy::Paused);
        assert_eq!(
            parse_gone("app_logout").unwrap(),
            GoneWhy::Released(ReleaseReason::AppLogout)
        );
        assert!(matches!(parse_gone("tired"), Err(LedgerError::Corrupt(_))));
        assert!(matches!(parse_gone(""), Err(LedgerError::Corrupt(_))));
    }

    #[test]
    fn an_unknown_or_missing_full_reason_is_refused() {
        assert_eq!(parse_full(Some("pool")).unwrap(), FullReason::Pool);
        assert_eq!(parse_full(Some("user_max")).unwrap(), FullReason::UserMax);
        assert!(matches!(
            parse_full(Some("full")),
            Err(LedgerError::Corrupt(_))
        ));
        assert!(matches!(parse_full(None), Err(LedgerError::Corrupt(_))));
    }

    /// Found by the fuzz target below: 1.8447e19 read as u64::MAX instead of being refused.
    #[test]
    fn a_count_past_u64_is_refused_not_saturated() {
        assert!(answer(r#"{"kind":"ok","gone_until":18447000000e9}"#).is_err());
        assert!(answer(r#"{"kind":"ok","gone_until":18446744073709551616}"#).is_err());
        let a = answer(r#"{"kind":"ok","gone_until":18446744073709549568}"#).unwrap();
        assert_eq!(a.gone_until, 18446744073709549568);
    }

    #[test]
    fn a_bad_session_key_is_refused() {
        assert_eq!(parse_session("").unwrap(), None);
        let k = SessionKey::new("p", "c");
        assert_eq!(parse_session(&k.hex()).unwrap(), Some(k));
        assert!(matches!(parse_session("zz"), Err(LedgerError::Corrupt(_))));
        let upper = k.hex().to_uppercase();
        assert!(
            matches!(parse_session(&upper), Err(LedgerError::Corrupt(_))),
            "{upper}"
        );
        let rec = REC.replace(r#""session":"""#, r#""session":"not-hex""#);
        let rec: Rec = serde_json::from_str(&rec).unwrap();
        assert!(matches!(
            rec.record(&PoolKey::new("p", "q")),
            Err(LedgerError::Corrupt(_))
        ));
    }

    #[test]
    fn an_unreadable_stored_seat_fails_the_listing() {
        let a = answer(&format!(
            r#"{{"kind":"list","seats":[{:?},"{{\"id\":1}}"]}}"#,
            REC
        ))
        .unwrap();
        assert!(matches!(seats_of(&a), Err(LedgerError::Corrupt(_))));
        let a = answer(&format!(r#"{{"kind":"list","seats":[{REC:?}]}}"#)).unwrap();
        assert_eq!(seats_of(&a).unwrap().len(), 1);
    }

    const TICKET: &str = r#"{"id":"00000000000000b2","key":"000102030405060708090a0b0c0d0e0f","user":"bob","client":"web","joined_at":10,"last_poll":20,"state":"ready","ready_until":30,"position":1}"#;
    const STATUS: &str = r#"{"id":"00000000000000b2","state":"waiting","position":2,"length":3,"needed":1,"deadline":90000,"releases":0,"since":0}"#;

    fn line_event(ev: &str, result: Option<&str>) -> String {
        let result = result.map_or(String::new(), |r| format!(r#","result":"{r}""#));
        format!(r#"{{"kind":"ok","line":[{{"ticket":{TICKET},"ev":"{ev}"{result},"at":5}}]}}"#)
    }

    #[test]
    fn a_known_queue_answer_reads() {
        let pool = PoolKey::new("p", "q");
        let a = answer(&format!(
            r#"{{"kind":"queued","now":30000,"status":{STATUS},"tickets":[{TICKET}],"line":{{}}}}"#
        ))
        .unwrap();
        let st = status_of(&a).unwrap();
        assert_eq!(
            (st.state, st.position, st.length, st.ready_until),
            (TicketState::Waiting, 2, 3, None)
        );
        // The first seat's end, 60 s after the answer's time.
        assert_eq!(st.estimated_wait, Some(60_000));
        let t = a.tickets[0].ticket(&pool).unwrap();
        assert_eq!(
            (t.state, t.ready_until, t.user.as_deref()),
            (TicketState::Ready, Some(30), Some("bob"))
        );
        assert_eq!(t.key.hex(), "000102030405060708090a0b0c0d0e0f");
        let a = answer(&line_event("left", Some("line_full"))).unwrap();
        assert_eq!(
            a.line[0].event().unwrap(),
            QueueEvent::Left(QueueResult::LineFull)
        );
        assert_eq!(
            answer(&line_event("ready", None)).unwrap().line[0]
                .event()
                .unwrap(),
            QueueEvent::Ready
        );
    }

    #[test]
    fn an_unknown_or_inconsistent_queue_answer_is_refused() {
        let pool = PoolKey::new("p", "q");
        // Unknown words: the ticket's state, the event, the result.
        assert!(answer(&format!(
            r#"{{"kind":"line","tickets":[{}]}}"#,
            TICKET.replace("\"ready\"", "\"readdy\"")
        ))
        .is_err());
        assert!(answer(&line_event("joinned", None)).is_err());
        assert!(answer(&line_event("left", Some("full"))).is_err());
        // A leave without its reason, a join or promotion with one.
        for (ev, result) in [
            ("left", None),
            ("joined", Some("admitted")),
            ("ready", Some("expired")),
        ] {
            let a = answer(&line_event(ev, result)).unwrap();
            assert!(
                matches!(a.line[0].event(), Err(LedgerError::Corrupt(_))),
                "{ev} {result:?}"
            );
        }
        // A ready ticket without the end of its hold; a key that is no ticket key; a position
        // past what a line holds.
        let bad = [
            TICKET.replace(r#""ready_until":30"#, r#""ready_until":0"#),
            TICKET.replace("000102030405060708090a0b0c0d0e0f", "zz"),
            TICKET.replace(r#""position":1"#, r#""position":4294967296"#),
        ];
        for raw in bad {
            let t: TicketRec = serde_json::from_str(&raw).unwrap();
            assert!(
                matches!(t.ticket(&pool), Err(LedgerError::Corrupt(_))),
                "{raw}"
            );
        }
        // Only the spelling the script stores: `from_hex` alone reads uppercase too.
        assert!(parse_ticket_key(&"+f".repeat(16)).is_err());
        assert!(parse_ticket_key("000102030405060708090A0B0C0D0E0F").is_err());
        assert!(answer(r#"{"kind":"queued","earliest":[1,-2]}"#).is_err());
        assert!(matches!(
            status_of(&answer(r#"{"kind":"queued"}"#).unwrap()),
            Err(LedgerError::Corrupt(_))
        ));
        let st = STATUS.replace(r#""state":"waiting""#, r#""state":"ready""#);
        let a = answer(&format!(r#"{{"kind":"queued","status":{st}}}"#)).unwrap();
        assert!(matches!(status_of(&a), Err(LedgerError::Corrupt(_))));
    }

    #[test]
    fn the_estimate_reads_the_needed_seat_and_the_rate() {
        let now = 1_000_000;
        // The needed-th seat's end against needed releases at the rate: the sooner.
        assert_eq!(
            estimate_at(Some(now + 90_000), 3, 60, RATE_WINDOW, now),
            Some(90_000)
        );
        assert_eq!(
            estimate_at(Some(now + 900_000), 3, 60, RATE_WINDOW, now),
            Some(180_000)
        );
        assert_eq!(estimate_at(None, 3, 60, RATE_WINDOW, now), Some(180_000));
        assert_eq!(estimate_at(None, 3, 0, RATE_WINDOW, now), None);
        // As `estimate` on the whole list of deadlines says.
        let d = [now + 10, now + 20, now + 90_000];
        assert_eq!(
            estimate_at(Some(d[2]), 3, 6, RATE_WINDOW, now),
            estimate(&d, 3, 6, RATE_WINDOW, now)
        );
        // A young pool's window is the time since its first release, at least a minute.
        assert_eq!(rate_window(0, now), RATE_WINDOW);
        assert_eq!(rate_window(now - 10, now), 60_000);
        assert_eq!(rate_window(now - 600_000, now), 600_000);
        assert_eq!(rate_window(1, 10 * RATE_WINDOW), RATE_WINDOW);
    }

    // Issue 13: the answer parsers fed what a broken or hostile store could send. Bounded like
    // tests/it/fuzz.rs (`SEATGATE_FUZZ_CASES`, default 256).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            let cases = std::env::var("SEATGATE_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256);
            ProptestConfig {
                cases,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// A known answer with one field's value replaced by arbitrary JSON-ish text.
        fn mutated_answer() -> impl Strategy<Value = (&'static str, String)> {
            let field = prop_oneof![
                Just("kind"),
                Just("in_use"),
                Just("reason"),
                Just("seat"),
                Just("released"),
                Just("out"),
                Just("seats"),
                Just("gone_until"),
                Just("line"),
                Just("status"),
                Just("ticket"),
                Just("tickets"),
                Just("earliest"),
                Just("retry_after"),
            ];
            let value = prop_oneof![
                "\"[a-z_]{0,12}\"",
                "-?[0-9]{1,20}(\\.[0-9]{1,4})?(e[0-9]{1,3})?",
                Just("null".to_string()),
                Just("{}".to_string()),
                Just("[]".to_string()),
                Just(format!("[{REC}]")),
                Just("[[\"00000000000000a1\",\"ending\",-1]]".to_string()),
                Just(TICKET.to_string()),
                Just(STATUS.to_string()),
                Just(format!("[{TICKET}]")),
                Just(format!(
                    r#"[{{"ticket":{TICKET},"ev":"left","result":"removed","at":1}}]"#
                )),
                Just(format!(
                    r#"[{{"ticket":{TICKET},"ev":"joined","result":"removed","at":1}}]"#
                )),
                Just("[1,2,-3]".to_string()),
                ".{0,40}",
            ];
            (field, value)
        }
        /// Every queue part of an answer read as the store reads it: it answers or is refused,
        /// never panics.
        fn queue_parts(a: &Answer) {
            let pool = PoolKey::new("p", "q");
            let _ = status_of(a);
            for t in a.ticket.iter().chain(&a.tickets) {
                let _ = t.ticket(&pool);
            }
            for e in &a.line {
                let _ = (e.ticket.ticket(&pool), e.event());
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_answers_parse_or_are_refused(raw in ".{0,300}") {
                if let Ok(a) = answer(&raw) {
                    let _ = seats_of(&a);
                    let _ = parse_full(a.reason.as_deref());
                    if let Some(r) = &a.seat {
                        let _ = r.record(&PoolKey::new("p", "q"));
                    }
                    queue_parts(&a);
                }
            }

            #[test]
            fn mutated_answers_never_read_as_something_else((field, value) in mutated_answer()) {
                let raw = format!(
                    r#"{{"kind":"granted","in_use":1,"capacity":2,"seat":{REC},"{field}":{value}}}"#
                );
                let Ok(a) = answer(&raw) else { return Ok(()) };
                let number = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
                // serde_json's float reading may differ from std's in the last place.
                let read_as = |got: u64| {
                    number.is_some_and(|v| (got as f64 - v.trunc()).abs() <= v * 1e-15 + 1.0)
                };
                match field {
                    // A count is read only from a non-negative finite number, as that number.
                    "in_use" => prop_assert!(read_as(a.in_use), "{} read as {}", value, a.in_use),
                    "gone_until" => prop_assert!(read_as(a.gone_until), "{} read as {}", value, a.gone_until),
                    // A kind is read only from one of the script's words.
                    "kind" => prop_assert!(value.starts_with('"') && serde_json::from_str::<Kind>(&value).is_ok()),
                    // An end outcome with a negative time is refused, not read as 0.
                    "out" => prop_assert!(!value.contains("-1")),
                    "retry_after" => prop_assert!(read_as(a.retry_after), "{} read as {}", value, a.retry_after),
                    // Deadlines are counts, each read strictly.
                    "earliest" => prop_assert!(!value.contains('-') || a.earliest.is_empty()),
                    // A joined ticket's event has no result: refused as an event, whatever else.
                    "line" if value.contains("\"joined\"") => {
                        prop_assert!(a.line.iter().all(|e| e.event().is_err()))
                    }
                    _ => {}
                }
                queue_parts(&a);
            }

            #[test]
            fn words_and_keys_are_known_or_refused(word in "[a-z_]{0,16}|.{0,40}") {
                let known_gone = ["unknown", "paused"].contains(&word.as_str())
                    || word.parse::<ReleaseReason>().is_ok();
                prop_assert_eq!(parse_gone(&word).is_ok(), known_gone);
                prop_assert_eq!(
                    parse_full(Some(&word)).is_ok(),
                    word.parse::<FullReason>().is_ok()
                );
                prop_assert_eq!(
                    serde_json::from_value::<TicketState>(word.clone().into()).is_ok(),
                    ["waiting", "ready"].contains(&word.as_str())
                );
                prop_assert_eq!(
                    serde_json::from_value::<LineEv>(word.clone().into()).is_ok(),
                    ["joined", "ready", "left"].contains(&word.as_str())
                );
                prop_assert_eq!(
                    serde_json::from_value::<QueueResult>(word.clone().into()).is_ok(),
                    ["admitted", "abandoned", "expired", "removed", "line_full"].contains(&word.as_str())
                );
                prop_assert_eq!(
                    parse_ticket_key(&word).is_ok(),
                    word.len() == 32 && word.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
                let key = parse_session(&word);
                prop_assert!(
                    word.is_empty() && matches!(key, Ok(None))
                        || SessionKey::from_hex(&word).is_some() && key.is_ok()
                        || matches!(key, Err(LedgerError::Corrupt(_)))
                );
            }
        }
    }
}
