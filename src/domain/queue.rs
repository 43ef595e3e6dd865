//! The waiting line of a pool: tickets, their states and what the ledger answers about them.
//!
//! A login refused for want of a seat (a browser, with the pool's `queue` on) joins the line
//! with a ticket: a random cookie value whose hash (`TicketKey`) is all the store keeps. When a
//! seat frees, the ledger reserves it for the head of the line for `hold` (the ticket is then
//! `Ready`) under the ticket's own lease id, so the login carrying that ticket finds the
//! reservation exactly as a self-service hold is found, and nobody else can take it.

use super::keys::{from_hex16, hex16, PoolKey, SeatId};
use super::time::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// A ticket cookie's value, hashed with its pool so the raw value is never stored or listed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TicketKey(pub [u8; 16]);

impl TicketKey {
    pub fn new(pool: &PoolKey, cookie_value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"queue\0");
        h.update(pool.product.as_bytes());
        h.update([0u8]);
        h.update(pool.pool.as_bytes());
        h.update([0u8]);
        h.update(cookie_value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        TicketKey(k)
    }

    /// The lease id of the seat held for this ticket when it is ready: derived, so a login
    /// carrying the ticket claims it without asking the store first. Never 0.
    pub fn lease_id(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..16]);
        u64::from_be_bytes(b) | 1
    }

    pub fn hex(&self) -> String {
        hex16(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        from_hex16(s).map(TicketKey)
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tk:{:02x}{:02x}{:02x}{:02x}",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A pool's `queue` settings, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// How long a freed seat waits for the head of the line.
    pub hold: Millis,
    /// A waiting ticket not polled for this long leaves the line.
    pub abandon_after: Millis,
    /// A ticket waiting longer than this expires.
    pub max_wait: Millis,
    /// Tickets in line (waiting and ready) at most; a login past it gets the plain denial.
    pub max_length: u32,
    /// `false`: a seat that frees goes to the line before any newcomer (the ledger promotes
    /// the head within every reservation of the pool). `true`: a newcomer whose login can be
    /// served at once goes through; the line takes a free seat when its head polls.
    pub barging: bool,
}

/// Polls closer together than this get `Polled::TooSoon`.
pub const MIN_POLL_INTERVAL: Millis = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// In line; no seat yet.
    Waiting,
    /// A seat is held for this ticket until `ready_until`.
    Ready,
}

impl TicketState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TicketState::Waiting => "waiting",
            TicketState::Ready => "ready",
        }
    }
}

/// A ticket as listed (admin page, `GET /api/queue`) and as told to the observer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ticket {
    /// Public id (admin removal); not the cookie.
    pub id: SeatId,
    pub key: TicketKey,
    pub pool: PoolKey,
    /// The user as typed at the login that joined.
    pub user: Option<String>,
    pub client: String,
    pub joined_at: Millis,
    pub last_poll: Millis,
    pub state: TicketState,
    pub ready_until: Option<Millis>,
    /// 1 for the head of the line; ready tickets ahead count.
    pub position: u32,
}

/// A ticket's state as its page is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    pub id: SeatId,
    pub state: TicketState,
    /// 1 for the head of the line (ready tickets ahead count).
    pub position: u32,
    /// Until the seat is likely free for this ticket (`policy::queue::estimate`); `None`:
    /// unknown. `Some(0)` when ready.
    pub estimated_wait: Option<Millis>,
    pub ready_until: Option<Millis>,
    /// Tickets in the pool's line, this one included.
    pub length: u32,
}

/// The answer to joining the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Joined {
    /// In line (or already in line with this ticket: its status, nothing changes but the poll
    /// time). May be `Ready` at once when a seat was free for it.
    Queued(QueueStatus),
    /// The line is at `max_length`: not joined.
    LineFull,
}

/// The answer to a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Polled {
    Status(QueueStatus),
    /// Polled again within `MIN_POLL_INTERVAL`: nothing changed, ask again after this long.
    TooSoon {
        retry_after: Millis,
    },
    /// Not in this pool's line: never was (forged, foreign), or left (admitted, abandoned,
    /// expired, removed).
    Unknown,
}

/// Why a ticket left the line (`seatgate_queue_total{result}` and the `queue_leave` audit
/// event; `LineFull` is a login that could not join).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueResult {
    /// Its login took the seat held for it.
    Admitted,
    /// Its page stopped polling for `abandon_after`.
    Abandoned,
    /// Past `max_wait`, or its hold lapsed without a login.
    Expired,
    /// An admin removed it.
    Removed,
    /// Could not join: the line was at `max_length`.
    LineFull,
}

impl QueueResult {
    pub const ALL: [QueueResult; 5] = [
        QueueResult::Admitted,
        QueueResult::Abandoned,
        QueueResult::Expired,
        QueueResult::Removed,
        QueueResult::LineFull,
    ];

    /// The metric label (`full` for `LineFull`, as the issue names it).
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueResult::Admitted => "admitted",
            QueueResult::Abandoned => "abandoned",
            QueueResult::Expired => "expired",
            QueueResult::Removed => "removed",
            QueueResult::LineFull => "full",
        }
    }
}

/// What happened to a ticket, told to the `LedgerObserver` by the ledger that did it (on
/// Redis, the replica whose call did it), once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    Joined,
    /// A seat is held for it until `ready_until`.
    Ready,
    /// It left the line; for `Admitted`, `at - joined_at` is its wait.
    Left(QueueResult),
}
