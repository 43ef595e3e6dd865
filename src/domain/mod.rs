//! The seat's vocabulary, shared by every layer: keys, states, release reasons, pool specs,
//! the ledger's questions and answers, and time. It imports nothing of the crate, so config,
//! policy, the ledger and the gate can all speak it without importing each other.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// One licence grant of a pool: `seats` from `not_before` until `expires` (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub seats: u32,
    pub not_before: Option<u64>,
    pub expires: Option<u64>,
}

/// What one seat is: a session, a user, or a user on one device (`seats_per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatsPer {
    #[default]
    Session,
    User,
    UserDevice,
}

pub type Millis = u64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A session cookie, hashed with its product so the raw value is never stored or logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    pub fn new(product: &str, cookie_value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(product.as_bytes());
        h.update([0u8]);
        h.update(cookie_value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        SessionKey(k)
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut k = [0u8; 16];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SessionKey(k))
    }
}

impl fmt::Debug for SessionKey {
    /// Only a short prefix: enough to correlate log lines, useless to hijack a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sk:{:02x}{:02x}{:02x}{:02x}",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatId(pub u64);

impl SeatId {
    pub fn random() -> Self {
        SeatId(rand::random::<u64>() | 1)
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seat:{self}")
    }
}

impl FromStr for SeatId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.is_empty() || s.len() > 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(SeatId).map_err(|_| ())
    }
}

impl Serialize for SeatId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SeatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("bad seat id `{s}`")))
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub struct PoolKey {
    pub product: String,
    pub pool: String,
}

impl PoolKey {
    pub fn new(product: &str, pool: &str) -> Self {
        PoolKey {
            product: product.into(),
            pool: pool.into(),
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product, self.pool)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SeatState {
    /// Reserved by a login, or committed but not yet used by a second request.
    Standby,
    Active,
    /// Ended by an admin with grace; released at `ending_at`.
    Ending,
    /// Its owner paused it: listed, but holds no seat.
    Paused,
    /// An exempt user's session: known, listed, touched and ended like any other, never counted.
    Exempt,
    /// A named user's session (a seat of their own outside the pool): never counted.
    Named,
}

impl SeatState {
    pub fn as_str(&self) -> &'static str {
        match self {
            SeatState::Standby => "standby",
            SeatState::Active => "active",
            SeatState::Ending => "ending",
            SeatState::Paused => "paused",
            SeatState::Exempt => "exempt",
            SeatState::Named => "named",
        }
    }

    /// Whether a session in this state counts against its pool.
    pub fn holds_seat(&self) -> bool {
        matches!(
            self,
            SeatState::Standby | SeatState::Active | SeatState::Ending
        )
    }

    /// Exempt and named sessions: known to the gateway, never counted.
    pub fn uncounted(&self) -> bool {
        matches!(self, SeatState::Exempt | SeatState::Named)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Logout,
    Idle,
    Lifetime,
    Ended,
    Presence,
    Standby,
    Paused,
    Replaced,
    Config,
    /// The app deleted its session cookie (its own sign-off link or timeout page).
    AppLogout,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 10] = [
        ReleaseReason::Logout,
        ReleaseReason::Idle,
        ReleaseReason::Lifetime,
        ReleaseReason::Ended,
        ReleaseReason::Presence,
        ReleaseReason::Standby,
        ReleaseReason::Paused,
        ReleaseReason::Replaced,
        ReleaseReason::Config,
        ReleaseReason::AppLogout,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseReason::Logout => "logout",
            ReleaseReason::Idle => "idle",
            ReleaseReason::Lifetime => "lifetime",
            ReleaseReason::Ended => "ended",
            ReleaseReason::Presence => "presence",
            ReleaseReason::Standby => "standby",
            ReleaseReason::Paused => "paused",
            ReleaseReason::Replaced => "replaced",
            ReleaseReason::Config => "config",
            ReleaseReason::AppLogout => "app_logout",
        }
    }
}

/// One seat as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRecord {
    pub id: SeatId,
    pub pool: PoolKey,
    pub user: Option<String>,
    pub device: Option<String>,
    pub client: String,
    pub session: Option<SessionKey>,
    pub started_at: Millis,
    /// What the idle timer runs from: the last request that counted as activity (or input).
    pub last_activity: Millis,
    /// 0 = never sent a heartbeat, so presence does not apply.
    pub last_heartbeat: Millis,
    /// The last request of any kind (ignored ones included); 0 = none since this was recorded.
    #[serde(default)]
    pub last_request: Millis,
    /// The last input the heartbeat reported (key, pointer, "Stay signed in"); 0 = none.
    #[serde(default)]
    pub last_input: Millis,
    pub state: SeatState,
    pub ending_at: Option<Millis>,
    #[serde(default)]
    pub overflow: bool,
    #[serde(default)]
    pub ended_by: Option<String>,
}

/// What the ledger needs to know about a pool; rebuilt from config at start and on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub key: PoolKey,
    pub grants: Vec<Grant>,
    pub idle_timeout: Millis,
    pub max_lifetime: Millis,
    pub presence_timeout: Option<Millis>,
    pub standby_timeout: Millis,
    pub seats_per: SeatsPer,
    pub max_sessions: Option<u32>,
    pub groups: Vec<GroupLimit>,
    pub overflow_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLimit {
    pub name: String,
    pub users: HashSet<String>,
    pub reserve: u32,
    pub max: Option<u32>,
}

impl PoolSpec {
    pub fn capacity(&self, now: Millis) -> u32 {
        self.grants
            .iter()
            .filter(|g| g.not_before.is_none_or(|t| now >= t) && g.expires.is_none_or(|t| now < t))
            .map(|g| g.seats)
            .sum()
    }
}

/// A login asking for a seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub pool: PoolKey,
    pub user: Option<String>,
    pub device: Option<String>,
    pub client: String,
    /// Chosen by the gateway, so a retried reserve is idempotent.
    pub lease_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub pool: PoolKey,
    /// The seat this login takes over (same user, same device) instead of taking a new one.
    pub reuse: Option<SeatId>,
    pub overflow: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    Pool,
    GroupMax,
    UserMax,
    OverflowSpent,
}

impl FullReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FullReason::Pool => "full",
            FullReason::GroupMax => "group_max",
            FullReason::UserMax => "user_max",
            FullReason::OverflowSpent => "overflow_spent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full {
    pub in_use: u32,
    pub capacity: u32,
    pub reason: FullReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Reservation {
    Granted(Lease),
    Full(Full),
}

/// The answer to "does this cookie hold a seat?".
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Touch {
    Held {
        id: SeatId,
        pool: PoolKey,
        state: SeatState,
        ending_at: Option<Millis>,
    },
    Gone(Gone),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gone {
    /// Never seen (or forgotten): e.g. a session from before the gateway.
    Unknown,
    Released(ReleaseReason),
}

/// One session by id, as the store knows it, without changing it (admin validation).
/// Answered once per admin call and never stored, so the record is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Live(SeatRecord),
    /// Ended or released; its id is remembered.
    Ended,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndOutcome {
    Ending { at: Millis },
    NotFound,
    AlreadyEnded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseOutcome {
    Done,
    NotFound,
    /// Resume asked while the pool is full.
    Full,
    WrongState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub product: String,
    pub pool: String,
    pub capacity: u32,
    pub in_use: u32,
    pub available: u32,
    pub peak: u32,
    pub denied: u64,
    pub standby: u32,
    pub ending: u32,
    pub overflow_used_seconds: u64,
}
