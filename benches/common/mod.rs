//! What both ledger benches measure against: one pool of `seats` and a login claim per user.

use seatgate::domain::{Claim, Grant, PoolKey, PoolSpec, SeatsPer};

pub fn spec(seats: u32) -> PoolSpec {
    PoolSpec {
        key: PoolKey::new("bench", "default"),
        grants: vec![Grant {
            seats,
            not_before: None,
            expires: None,
        }],
        idle_timeout: 3_600_000,
        max_lifetime: 36_000_000,
        presence_timeout: None,
        standby_timeout: 60_000,
        seats_per: SeatsPer::Session,
        max_sessions: None,
        groups: vec![],
        overflow_ms: None,
        queue: None,
    }
}

pub fn claim(i: u64) -> Claim {
    Claim {
        pool: PoolKey::new("bench", "default"),
        user: Some(format!("u{i}")),
        device: None,
        client: "web".into(),
        lease_id: i,
    }
}
