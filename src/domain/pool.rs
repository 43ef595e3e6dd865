//! A pool as the ledger sees it: its grants, its limits, and its usage.

use super::keys::PoolKey;
use super::queue::QueueSpec;
use super::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

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
    /// The waiting line (`queue.enabled`); `None`: a full pool denies.
    pub queue: Option<QueueSpec>,
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
    /// Tickets in the pool's waiting line (waiting and ready).
    pub queue_length: u32,
}
