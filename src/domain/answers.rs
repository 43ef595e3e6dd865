//! The ledger's questions (a claim) and answers (leases, touches, lookups, outcomes).

use super::keys::{PoolKey, SeatId};
use super::seat::{ReleaseReason, SeatRecord, SeatState, Unknown};
use super::time::Millis;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

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

impl FromStr for FullReason {
    type Err = Unknown;
    /// The store's names (`pool` for a full pool), not the `as_str` labels.
    fn from_str(s: &str) -> Result<Self, Unknown> {
        match s {
            "pool" => Ok(FullReason::Pool),
            "group_max" => Ok(FullReason::GroupMax),
            "user_max" => Ok(FullReason::UserMax),
            "overflow_spent" => Ok(FullReason::OverflowSpent),
            _ => Err(Unknown {
                what: "full reason",
                value: s.into(),
            }),
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
