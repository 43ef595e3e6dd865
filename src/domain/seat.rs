//! One seat: its states, why it ends, and its record as stored and listed.

use super::keys::{PoolKey, SeatId, SessionKey};
use super::time::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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
    pub const ALL: [SeatState; 6] = [
        SeatState::Standby,
        SeatState::Active,
        SeatState::Ending,
        SeatState::Paused,
        SeatState::Exempt,
        SeatState::Named,
    ];

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

/// A stored or answered name this gateway does not know (another version's data, or damage):
/// refused, never read as some default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.what, self.value)
    }
}

impl std::error::Error for Unknown {}

impl FromStr for SeatState {
    type Err = Unknown;
    fn from_str(s: &str) -> Result<Self, Unknown> {
        SeatState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Unknown {
                what: "seat state",
                value: s.into(),
            })
    }
}

impl FromStr for ReleaseReason {
    type Err = Unknown;
    fn from_str(s: &str) -> Result<Self, Unknown> {
        ReleaseReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Unknown {
                what: "release reason",
                value: s.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_unknown_ones_are_refused() {
        for r in ReleaseReason::ALL {
            assert_eq!(r.as_str().parse::<ReleaseReason>(), Ok(r));
        }
        assert_eq!("active".parse::<SeatState>(), Ok(SeatState::Active));
        let e = "actve".parse::<SeatState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown seat state `actve`");
        assert!("".parse::<ReleaseReason>().is_err());
        assert!("Idle".parse::<ReleaseReason>().is_err());
    }
}
