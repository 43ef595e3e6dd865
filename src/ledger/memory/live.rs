//! A live seat: its record as atomics (touching an active seat takes no lock) and the state
//! byte, which reads back only what was stored.

use super::*;

pub(super) struct Live {
    pub(super) id: SeatId,
    pub(super) slot: Arc<PoolSlot>,
    pub(super) user: Option<String>,
    pub(super) device: Option<String>,
    pub(super) client: String,
    pub(super) started_at: Millis,
    /// Admitted beyond capacity: its time counts against the pool's overflow allowance while
    /// it holds a seat (a pause ends that for good: a resume is admitted within capacity).
    pub(super) overflow: AtomicBool,
    pub(super) last_activity: AtomicU64,
    pub(super) last_heartbeat: AtomicU64,
    pub(super) last_request: AtomicU64,
    pub(super) last_input: AtomicU64,
    pub(super) state: AtomicU8,
    pub(super) ending_at: AtomicU64,
    pub(super) dirty: AtomicBool,
    pub(super) session: Mutex<Option<SessionKey>>,
    pub(super) ended_by: Mutex<Option<String>>,
}

pub(super) fn state_to_u8(s: SeatState) -> u8 {
    match s {
        SeatState::Standby => 0,
        SeatState::Active => 1,
        SeatState::Ending => 2,
        SeatState::Paused => 3,
        SeatState::Exempt => 4,
        SeatState::Named => 5,
    }
}

/// `None` for a value `state_to_u8` never gives: refused, not read as some state.
pub(super) fn state_from_u8(v: u8) -> Option<SeatState> {
    match v {
        0 => Some(SeatState::Standby),
        1 => Some(SeatState::Active),
        2 => Some(SeatState::Ending),
        3 => Some(SeatState::Paused),
        4 => Some(SeatState::Exempt),
        5 => Some(SeatState::Named),
        _ => None,
    }
}

impl Live {
    pub(super) fn state(&self) -> SeatState {
        // Only `set_state` and the constructors store it, always from a `SeatState`.
        state_from_u8(self.state.load(Ordering::Acquire))
            .expect("a seat's state is only stored through state_to_u8")
    }

    pub(super) fn set_state(&self, s: SeatState) {
        self.state.store(state_to_u8(s), Ordering::Release);
    }

    pub(super) fn overflow(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }

    pub(super) fn times(&self) -> SeatTimes {
        let ending = self.ending_at.load(Ordering::Acquire);
        SeatTimes {
            started_at: self.started_at,
            last_activity: self.last_activity.load(Ordering::Acquire),
            last_heartbeat: self.last_heartbeat.load(Ordering::Acquire),
            state: self.state(),
            ending_at: (ending > 0).then_some(ending),
        }
    }

    pub(super) fn session(&self) -> Option<SessionKey> {
        *self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_session(&self, k: Option<SessionKey>) -> Option<SessionKey> {
        std::mem::replace(
            &mut *self.session.lock().unwrap_or_else(|e| e.into_inner()),
            k,
        )
    }

    pub(super) fn record(&self) -> SeatRecord {
        let t = self.times();
        SeatRecord {
            id: self.id,
            pool: self.slot.key.clone(),
            user: self.user.clone(),
            device: self.device.clone(),
            client: self.client.clone(),
            session: self.session(),
            started_at: self.started_at,
            last_activity: t.last_activity,
            last_heartbeat: t.last_heartbeat,
            last_request: self.last_request.load(Ordering::Acquire),
            last_input: self.last_input.load(Ordering::Acquire),
            state: t.state,
            ending_at: t.ending_at,
            overflow: self.overflow(),
            ended_by: self
                .ended_by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    pub(super) fn expired(&self, now: Millis) -> Option<ReleaseReason> {
        expiry(&self.slot.spec(), &self.times(), now)
    }

    /// When a seat found expired at `now` stopped holding: its deadline, not the moment a
    /// sweep or a request noticed (tombstones and overflow time run from there).
    pub(super) fn ended_at(&self, now: Millis) -> Millis {
        deadline(&self.slot.spec(), &self.times()).min(now)
    }

    /// Overflow time this seat has used by `now` (it stops counting at its deadline).
    pub(super) fn overflow_ms(&self, spec: &PoolSpec, now: Millis) -> u64 {
        if !self.overflow() {
            return 0;
        }
        deadline(spec, &self.times())
            .min(now)
            .saturating_sub(self.started_at)
    }
}

impl MemoryLedger {
    /// An id no seat of this store has or had lately: in time order (see [`crate::domain::SeatIds`]); a
    /// restored journal's seats may have ids from before that, drawn at random.
    fn fresh_id(&self) -> SeatId {
        loop {
            let id = self.ids.next();
            if !self.by_id.contains_key(&id) && !self.ended_ids.contains_key(&id) {
                return id;
            }
        }
    }

    pub(super) fn new_live(
        &self,
        slot: &Arc<PoolSlot>,
        claim: &Claim,
        session: SessionKey,
        state: SeatState,
        overflow: bool,
        now: Millis,
    ) -> Arc<Live> {
        Arc::new(Live {
            id: self.fresh_id(),
            slot: slot.clone(),
            user: claim.user.clone(),
            device: claim.device.clone(),
            client: claim.client.clone(),
            started_at: now,
            overflow: AtomicBool::new(overflow),
            last_activity: AtomicU64::new(now),
            last_heartbeat: AtomicU64::new(0),
            last_request: AtomicU64::new(now),
            last_input: AtomicU64::new(0),
            state: AtomicU8::new(state_to_u8(state)),
            ending_at: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            session: Mutex::new(Some(session)),
            ended_by: Mutex::new(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_byte_reads_back_and_an_unknown_one_is_refused() {
        for st in SeatState::ALL {
            assert_eq!(state_from_u8(state_to_u8(st)), Some(st));
        }
        assert_eq!(state_from_u8(6), None);
        assert_eq!(state_from_u8(255), None);
    }
}
