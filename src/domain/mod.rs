//! The seat's vocabulary, shared by every layer: keys, states, release reasons, pool specs,
//! the ledger's questions and answers, and time. It imports nothing of the crate, so config,
//! policy, the ledger and the gate can all speak it without importing each other.
//!
//! * `keys`: session keys, seat ids, pool keys.
//! * `seat`: seat states, release reasons, the seat record.
//! * `pool`: grants, `seats_per`, pool specs and usage.
//! * `answers`: what the ledger is asked and answers.
//! * `queue`: the waiting line's tickets and answers.
//! * `store`: where a shared store lives.
//! * `time`: unix milliseconds.

mod answers;
mod keys;
mod pool;
mod queue;
mod seat;
mod store;
mod time;

pub use answers::{
    Claim, EndOutcome, Full, FullReason, Gone, Lease, Lookup, PauseOutcome, Reservation, Touch,
};
pub use keys::{PoolKey, SeatId, SeatIds, SessionKey};
pub use pool::{Grant, GroupLimit, PoolSpec, PoolUsage, SeatsPer};
pub use queue::{
    Joined, Polled, QueueEvent, QueueResult, QueueSpec, QueueStatus, Ticket, TicketKey,
    TicketState, MIN_POLL_INTERVAL,
};
pub use seat::{ReleaseReason, SeatRecord, SeatState, Unknown};
pub use store::{RedisConfig, RedisTarget};
pub use time::{now_ms, Millis};
