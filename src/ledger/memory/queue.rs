//! A pool's waiting line, kept under the pool's mutex beside its seats: tickets in join order,
//! the head promoted to a held seat (a pending reservation under the ticket's lease id) when
//! one is free, tickets leaving when abandoned, expired or admitted; and the wait estimate.
//!
//! Cost: a poll is a hash lookup, a peek at the line's heap of leave times and a rank in a
//! Fenwick tree over join numbers (O(log n)), so a 1,000-ticket line polls about as cheaply
//! as a check. Ready tickets always come before waiting ones (promotion takes the head
//! waiting ticket, joins go to the back), so "waiting tickets ahead" is the rank less the
//! ready ones.

use super::*;
use crate::domain::{
    QueueEvent, QueueResult, QueueSpec, QueueStatus, TicketState, MIN_POLL_INTERVAL,
};
use crate::ledger::journal::TicketRow;
use crate::policy::queue::{estimate, ReleaseRate};
use std::collections::BTreeMap;

/// How long the sorted earliest deadlines of a pool's seats are reused by estimates.
const ESTIMATE_FOR: Millis = 1000;
/// Deadlines kept for estimates at least (deeper positions use the release rate).
const ESTIMATE_DEPTH: usize = 1024;

pub(super) struct InLine {
    pub(super) id: SeatId,
    pub(super) key: TicketKey,
    pub(super) seq: u64,
    pub(super) user: Option<String>,
    pub(super) client: String,
    pub(super) joined_at: Millis,
    /// The last poll or join (abandonment runs from it).
    pub(super) last_poll: Millis,
    /// The last poll only (`TooSoon` runs from it; joining is not polling).
    pub(super) polled_at: Option<Millis>,
    pub(super) ready_until: Option<Millis>,
    /// Polled since the last flush wrote `last_poll`.
    pub(super) dirty: bool,
}

impl InLine {
    /// When it leaves unless polled again, and why.
    fn leaves(&self, q: &QueueSpec) -> (Millis, QueueResult) {
        match self.ready_until {
            Some(until) => (until, QueueResult::Expired),
            None => {
                let abandon = self.last_poll.saturating_add(q.abandon_after);
                let expire = self.joined_at.saturating_add(q.max_wait);
                if expire <= abandon {
                    (expire, QueueResult::Expired)
                } else {
                    (abandon, QueueResult::Abandoned)
                }
            }
        }
    }

    fn state(&self) -> TicketState {
        match self.ready_until {
            Some(_) => TicketState::Ready,
            None => TicketState::Waiting,
        }
    }

    fn row(&self, pool: &PoolKey) -> TicketRow {
        TicketRow {
            key: self.key,
            id: self.id,
            pool: pool.clone(),
            user: self.user.clone(),
            client: self.client.clone(),
            joined_at: self.joined_at,
            seq: self.seq,
            last_poll: self.last_poll,
            ready_until: self.ready_until,
        }
    }
}

/// Counts of tickets by join number (a Fenwick tree over `base..base + len`): a ticket's
/// position is the count up to its number.
#[derive(Default)]
struct Ranks {
    base: u64,
    tree: Vec<u32>,
}

impl Ranks {
    fn fits(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < self.tree.len() as u64
    }

    fn add(&mut self, seq: u64, delta: i32) {
        let mut i = (seq - self.base) as usize + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] = self.tree[i - 1].wrapping_add(delta as u32);
            i += i & i.wrapping_neg();
        }
    }

    /// Tickets numbered `seq` or lower.
    fn upto(&self, seq: u64) -> u32 {
        let mut i = ((seq - self.base) as usize + 1).min(self.tree.len());
        let mut n = 0u32;
        while i > 0 {
            n = n.wrapping_add(self.tree[i - 1]);
            i &= i - 1;
        }
        n
    }
}

#[derive(Default)]
pub(super) struct Line {
    /// Ticket keys are SHA-256 outputs (a client cannot aim them at one bucket), so the fast
    /// per-process-seeded hash serves, as for pool keys.
    pub(super) tickets: HashMap<TicketKey, InLine, foldhash::fast::RandomState>,
    /// Join number → ticket, waiting ones (the first is the head waiting ticket).
    waiting: BTreeMap<u64, TicketKey>,
    /// Join number → ticket, ready ones.
    ready: BTreeMap<u64, TicketKey>,
    by_id: HashMap<SeatId, TicketKey, foldhash::fast::RandomState>,
    ranks: Ranks,
    next_seq: u64,
    /// Lower bounds of when each ticket leaves (polls only move it later), earliest first.
    leaves: BinaryHeap<Reverse<(Millis, u64)>>,
}

impl Line {
    pub(super) fn len(&self) -> usize {
        self.tickets.len()
    }

    fn key_of(&self, seq: u64) -> Option<TicketKey> {
        self.waiting
            .get(&seq)
            .or_else(|| self.ready.get(&seq))
            .copied()
    }

    fn insert(&mut self, t: InLine, q: &QueueSpec) {
        let seq = t.seq;
        self.next_seq = self.next_seq.max(seq + 1);
        if !self.ranks.fits(seq) {
            self.rebuild_ranks(seq);
        }
        self.ranks.add(seq, 1);
        if outgrown(self.leaves.len(), self.tickets.len()) {
            // Entries of tickets that left (admitted, removed) are dropped when they come up;
            // a line with much coming and going drops them all at once now and then.
            self.rewatch(q);
        }
        self.leaves.push(Reverse((t.leaves(q).0, seq)));
        self.by_id.insert(t.id, t.key);
        match t.ready_until {
            Some(_) => self.ready.insert(seq, t.key),
            None => self.waiting.insert(seq, t.key),
        };
        self.tickets.insert(t.key, t);
    }

    /// Numbers from the oldest ticket in line to twice the span taken, so the tree is rebuilt
    /// once per that many joins, not per join.
    fn rebuild_ranks(&mut self, also: u64) {
        let lo = self
            .waiting
            .keys()
            .chain(self.ready.keys())
            .copied()
            .min()
            .unwrap_or(also)
            .min(also);
        let span = (self.next_seq.max(also + 1) - lo) as usize;
        let len = (2 * span).max(64).next_power_of_two();
        self.ranks = Ranks {
            base: lo,
            tree: vec![0; len],
        };
        let seqs: Vec<u64> = self.tickets.values().map(|t| t.seq).collect();
        for s in seqs {
            self.ranks.add(s, 1);
        }
    }

    fn remove(&mut self, key: &TicketKey) -> Option<InLine> {
        let t = self.tickets.remove(key)?;
        self.ranks.add(t.seq, -1);
        self.waiting.remove(&t.seq);
        self.ready.remove(&t.seq);
        self.by_id.remove(&t.id);
        if self.tickets.is_empty() {
            self.leaves.clear();
        }
        Some(t)
    }

    fn position(&self, t: &InLine) -> u32 {
        self.ranks.upto(t.seq)
    }

    /// Every leave time watched afresh (a new spec may shorten them).
    fn rewatch(&mut self, q: &QueueSpec) {
        self.leaves = self
            .tickets
            .values()
            .map(|t| Reverse((t.leaves(q).0, t.seq)))
            .collect();
    }

    /// After a restart: every ticket waiting, polled at `now`.
    fn restart(&mut self, now: Millis, q: &QueueSpec) {
        let ready = std::mem::take(&mut self.ready);
        self.waiting.extend(ready);
        for t in self.tickets.values_mut() {
            t.ready_until = None;
            t.last_poll = now;
        }
        self.rewatch(q);
    }

    pub(super) fn is_ready_lease(&self, lease_id: u64) -> bool {
        self.ready.values().any(|k| k.lease_id() == lease_id)
    }

    pub(super) fn anyone_waits(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether a waiting ticket that has not lapsed by `now` is in line, without dropping the
    /// lapsed ones (a check asks under the view lock): the leave heap's earliest entry (never
    /// later than a ticket's real leave time) settles it unless one may have lapsed.
    pub(super) fn waits_at(&self, q: &QueueSpec, now: Millis) -> bool {
        match self.leaves.peek() {
            Some(Reverse((at, _))) if *at <= now => self
                .waiting
                .values()
                .any(|k| self.tickets.get(k).is_some_and(|t| t.leaves(q).0 > now)),
            _ => !self.waiting.is_empty(),
        }
    }

    /// Tickets in line that have not lapsed by `now` (listing and usage ask without changing).
    pub(super) fn live_len(&self, q: Option<&QueueSpec>, now: Millis) -> u32 {
        match q {
            Some(q) => self
                .tickets
                .values()
                .filter(|t| t.leaves(q).0 > now)
                .count() as u32,
            None => 0,
        }
    }
}

/// The sorted earliest deadlines of a pool's seats, and when they were taken.
#[derive(Default)]
pub(super) struct Estimates {
    at: Option<Millis>,
    earliest: Vec<Millis>,
    /// The rate's releases and window as of `at` (summing its minutes per poll cost more than
    /// the rest of a poll).
    releases: (u64, Millis),
    pub(super) rate: ReleaseRate,
    /// Counted seats that left since the rate was last told (told with the time of that call).
    pub(super) unrated: u64,
}

/// What a line change tells once the pool lock is gone: observer events and, for seats found
/// lapsed on the way, their release.
#[derive(Default)]
pub(super) struct Told {
    pub(super) events: Vec<(Ticket, QueueEvent, Millis)>,
    pub(super) expired: Vec<(Arc<Live>, ReleaseReason)>,
    pub(super) ops: Vec<Op>,
}

impl MemoryLedger {
    fn listed(line: &Line, pool: &PoolKey, t: &InLine) -> Ticket {
        Ticket {
            id: t.id,
            key: t.key,
            pool: pool.clone(),
            user: t.user.clone(),
            client: t.client.clone(),
            joined_at: t.joined_at,
            last_poll: t.last_poll,
            state: t.state(),
            ready_until: t.ready_until,
            position: line.position(t),
        }
    }

    /// Drops tickets whose time is up at `now` (their leave time, not `now`, is told).
    pub(super) fn reap_line(
        st: &mut PoolState,
        pool: &PoolKey,
        q: &QueueSpec,
        now: Millis,
        told: &mut Told,
    ) {
        while let Some(&Reverse((at, seq))) = st.line.leaves.peek() {
            if at > now {
                break;
            }
            st.line.leaves.pop();
            let Some(key) = st.line.key_of(seq) else {
                continue;
            };
            let (at, why) = st.line.tickets[&key].leaves(q);
            if at > now {
                st.line.leaves.push(Reverse((at, seq)));
                continue;
            }
            let listed = Self::listed(&st.line, pool, &st.line.tickets[&key]);
            Self::leave_line(st, &key);
            told.ops.push(Op::TicketDelete(key));
            told.events.push((listed, QueueEvent::Left(why), at));
        }
    }

    /// A ticket leaves the line other than by its login: a seat held for it is given back.
    fn leave_line(st: &mut PoolState, key: &TicketKey) {
        if let Some(t) = st.line.remove(key) {
            if t.ready_until.is_some() {
                st.pending.remove(&key.lease_id());
            }
        }
    }

    /// While a seat is free for the head waiting ticket (the pool's rules for its user,
    /// overflow never), it becomes ready with a reservation under its lease id.
    pub(super) fn promote_line(
        st: &mut PoolState,
        spec: &PoolSpec,
        q: &QueueSpec,
        now: Millis,
        told: &mut Told,
    ) {
        while let Some((&seq, &key)) = st.line.waiting.first_key_value() {
            // Most polls of a long line find the pool full: every counted seat still holds
            // (none may have lapsed) and they fill it. Known in O(1), without the counts.
            let holding = (st.seats.len() - st.doomed.len()) as u32;
            if !st.any_due(now) && holding >= spec.capacity(now) {
                break;
            }
            let user = st.line.tickets[&key].user.clone();
            let (counts, expired) = Self::holders(st, spec, user.as_deref(), now);
            told.expired.extend(expired);
            if admission::admit_counts(spec, &counts, user.as_deref(), now, None) != Admit::Seat {
                break;
            }
            let until = now + q.hold;
            st.line.waiting.remove(&seq);
            st.line.ready.insert(seq, key);
            let t = st.line.tickets.get_mut(&key).expect("ticket in line");
            t.ready_until = Some(until);
            st.line.leaves.push(Reverse((until, seq)));
            let held = Pending {
                user,
                expires: until,
                counts: true,
                overflow: false,
            };
            // A reservation of its own under the lease id (a login that failed) was counted
            // already: the held seat replaces it, it is not a second seat.
            let replaced = st
                .pending
                .insert(key.lease_id(), held)
                .is_some_and(|p| p.counts && p.expires > now);
            st.peak = st.peak.max(counts.in_use + u32::from(!replaced));
            let t = &st.line.tickets[&key];
            // Journaled so a restart knows whether its hold lapsed while the gateway was down.
            told.ops.push(Op::TicketPut(Box::new(t.row(&spec.key))));
            let listed = Self::listed(&st.line, &spec.key, t);
            told.events.push((listed, QueueEvent::Ready, now));
        }
    }

    /// Lapsed reservations dropped, the reap, then (where `promote`) the promotion: what
    /// every line call and every reservation does first.
    pub(super) fn tend_line(
        st: &mut PoolState,
        spec: &PoolSpec,
        now: Millis,
        promote: bool,
        told: &mut Told,
    ) {
        st.pending.retain(|_, p| p.expires > now);
        let Some(q) = spec.queue.as_ref() else {
            if !st.line.tickets.is_empty() {
                Self::close_line(st, &spec.key, now, told);
            }
            return;
        };
        Self::reap_line(st, &spec.key, q, now, told);
        if promote {
            Self::promote_line(st, spec, q, now, told);
        }
    }

    /// A reload turned the pool's line off: every ticket in it expires now, and seats held
    /// for ready ones are given back.
    fn close_line(st: &mut PoolState, pool: &PoolKey, now: Millis, told: &mut Told) {
        let mut keys: Vec<(u64, TicketKey)> =
            st.line.tickets.values().map(|t| (t.seq, t.key)).collect();
        keys.sort_unstable();
        for (_, key) in keys {
            let listed = Self::listed(&st.line, pool, &st.line.tickets[&key]);
            Self::leave_line(st, &key);
            told.ops.push(Op::TicketDelete(key));
            told.events
                .push((listed, QueueEvent::Left(QueueResult::Expired), now));
        }
    }

    /// Queues the line's journal writes; called with the pool lock held, so the file sees a
    /// ticket's changes in the order memory did (a ready ticket's row never lands after its
    /// deletion).
    pub(super) fn write_line(&self, told: &mut Told) {
        let ops = std::mem::take(&mut told.ops);
        if let (Some(j), false) = (&self.journal, ops.is_empty()) {
            j.enqueue(ops);
        }
    }

    /// The events, once the pool lock is let go (its writes were queued under it).
    pub(super) fn tell(&self, mut told: Told) -> Vec<(Arc<Live>, ReleaseReason)> {
        debug_assert!(told.ops.is_empty(), "line writes queued outside the lock");
        self.write_line(&mut told);
        for (t, ev, at) in &told.events {
            self.observer.queue_event(t, *ev, *at);
        }
        told.expired
    }

    fn status(st: &mut PoolState, spec: &PoolSpec, key: &TicketKey, now: Millis) -> QueueStatus {
        let line = &st.line;
        let t = &line.tickets[key];
        let position = line.position(t);
        let (state, ready_until, id) = (t.state(), t.ready_until, t.id);
        let ready_ahead = line.ready.range(..t.seq).count() as u32;
        let length = line.len() as u32;
        let estimated_wait = match state {
            TicketState::Ready => Some(0),
            TicketState::Waiting => {
                let needed = position.saturating_sub(ready_ahead).max(1);
                Self::estimate_locked(st, spec, needed, now)
            }
        };
        QueueStatus {
            id,
            state,
            position,
            estimated_wait,
            ready_until,
            length,
        }
    }

    /// `policy::queue::estimate` on the pool's earliest seat deadlines (taken at most once a
    /// second: a walk over the seats) and its release rate.
    pub(super) fn estimate_locked(
        st: &mut PoolState,
        spec: &PoolSpec,
        needed: u32,
        now: Millis,
    ) -> Option<Millis> {
        let unrated = std::mem::take(&mut st.estimates.unrated);
        st.estimates.rate.record(unrated, now);
        let depth = ESTIMATE_DEPTH.max(spec.queue.map_or(0, |q| q.max_length as usize + 1));
        let e = &st.estimates;
        let recent = e.at.is_some_and(|at| at <= now && now < at + ESTIMATE_FOR);
        // Seats taken since the deadlines were read, and the answer needs one that is not
        // there (a pool that filled within the second): read again rather than say "unknown".
        // Bounded: never for a position deeper than the deadlines kept.
        let short =
            e.earliest.len() < (needed as usize).min(depth) && st.seats.len() > e.earliest.len();
        if !recent || short {
            // Seats found lapsed (doomed, not yet released) are in too: their deadline has
            // passed, which the estimate reads as "now", and sparing a set lookup per seat
            // is most of this walk's cost at 100k seats.
            let mut d: Vec<Millis> = st
                .seats
                .values()
                .map(|l| deadline(spec, &l.times()))
                .collect();
            if d.len() > depth {
                d.select_nth_unstable(depth - 1);
                d.truncate(depth);
            }
            d.sort_unstable();
            st.estimates.earliest = d;
            st.estimates.at = Some(now);
            st.estimates.releases = st.estimates.rate.over_window(now);
        }
        let (releases, window) = st.estimates.releases;
        estimate(&st.estimates.earliest, needed, releases, window, now)
    }

    pub(super) async fn enqueue_now(
        &self,
        claim: &Claim,
        key: TicketKey,
        now: Millis,
    ) -> Result<Joined, LedgerError> {
        let Some(slot) = self.slot(&claim.pool) else {
            return Ok(Joined::LineFull);
        };
        let spec = slot.spec();
        let Some(q) = spec.queue else {
            return Ok(Joined::LineFull);
        };
        let mut told = Told::default();
        let (out, write) = {
            let mut st = slot.lock();
            Self::tend_line(&mut st, &spec, now, false, &mut told);
            let mut write = Write { written: None };
            if let Some(t) = st.line.tickets.get_mut(&key) {
                t.last_poll = t.last_poll.max(now);
                t.dirty = true;
            } else if st.line.len() >= q.max_length as usize {
                let would = Ticket {
                    id: SeatId::random(),
                    key,
                    pool: slot.key.clone(),
                    user: claim.user.clone(),
                    client: claim.client.clone(),
                    joined_at: now,
                    last_poll: now,
                    state: TicketState::Waiting,
                    ready_until: None,
                    position: st.line.len() as u32 + 1,
                };
                told.events
                    .push((would, QueueEvent::Left(QueueResult::LineFull), now));
                return Ok(self.line_full(st, told));
            } else {
                let t = InLine {
                    id: SeatId::random(),
                    key,
                    seq: st.line.next_seq,
                    user: claim.user.clone(),
                    client: claim.client.clone(),
                    joined_at: now,
                    last_poll: now,
                    polled_at: None,
                    ready_until: None,
                    dirty: false,
                };
                // The join is awaited (durable before the page says "in line"); leaves are not.
                // Leaves found on the way first: one may be this very ticket's earlier stay.
                self.write_line(&mut told);
                write = self.submit(vec![Op::TicketPut(Box::new(t.row(&slot.key)))]);
                st.line.insert(t, &q);
                let listed = Self::listed(&st.line, &slot.key, &st.line.tickets[&key]);
                told.events.push((listed, QueueEvent::Joined, now));
            }
            Self::promote_line(&mut st, &spec, &q, now, &mut told);
            self.write_line(&mut told);
            (Self::status(&mut st, &spec, &key, now), write)
        };
        write.logged().await;
        let expired = self.tell(told);
        self.expire_some(expired, now).await;
        Ok(Joined::Queued(out))
    }

    /// A refused join: told, and the seats found lapsed left doomed for the sweep.
    fn line_full(&self, st: std::sync::MutexGuard<'_, PoolState>, mut told: Told) -> Joined {
        self.write_line(&mut told);
        drop(st);
        let _ = self.tell(told);
        Joined::LineFull
    }

    pub(super) fn poll_now(&self, pool: &PoolKey, key: &TicketKey, now: Millis) -> Polled {
        let Some(slot) = self.slot(pool) else {
            return Polled::Unknown;
        };
        let spec = slot.spec();
        let Some(q) = spec.queue else {
            return Polled::Unknown;
        };
        let mut told = Told::default();
        let out = {
            let mut st = slot.lock();
            Self::tend_line(&mut st, &spec, now, false, &mut told);
            let out = match st.line.tickets.get_mut(key) {
                None => Polled::Unknown,
                Some(t) => match t.polled_at {
                    Some(p) if now < p + MIN_POLL_INTERVAL => Polled::TooSoon {
                        retry_after: p + MIN_POLL_INTERVAL - now,
                    },
                    _ => {
                        t.polled_at = Some(now);
                        t.last_poll = t.last_poll.max(now);
                        t.dirty = true;
                        Self::promote_line(&mut st, &spec, &q, now, &mut told);
                        Polled::Status(Self::status(&mut st, &spec, key, now))
                    }
                },
            };
            self.write_line(&mut told);
            out
        };
        // Seats found lapsed stay doomed (uncounted) for the sweep: a poll does no I/O.
        let _ = self.tell(told);
        out
    }

    pub(super) async fn admitted_now(
        &self,
        pool: &PoolKey,
        key: &TicketKey,
        now: Millis,
    ) -> Option<Ticket> {
        let slot = self.slot(pool)?;
        let spec = slot.spec();
        let mut told = Told::default();
        let listed = {
            let mut st = slot.lock();
            // A ticket whose time is up left already, whoever asks.
            Self::tend_line(&mut st, &spec, now, false, &mut told);
            let Some(t) = st.line.tickets.get(key) else {
                self.write_line(&mut told);
                drop(st);
                let _ = self.tell(told);
                return None;
            };
            let listed = Self::listed(&st.line, pool, t);
            st.line.remove(key);
            // Committed: the seat is a seat now; a reservation left over holds nothing.
            st.pending.remove(&key.lease_id());
            told.ops.push(Op::TicketDelete(*key));
            told.events
                .push((listed.clone(), QueueEvent::Left(QueueResult::Admitted), now));
            self.write_line(&mut told);
            listed
        };
        let _ = self.tell(told);
        Some(listed)
    }

    pub(super) async fn remove_ticket_now(&self, id: SeatId, now: Millis) -> Option<Ticket> {
        for slot in self.slots() {
            let spec = slot.spec();
            let mut told = Told::default();
            let listed = {
                let mut st = slot.lock();
                Self::tend_line(&mut st, &spec, now, false, &mut told);
                let Some(key) = st.line.by_id.get(&id).copied() else {
                    self.write_line(&mut told);
                    drop(st);
                    let _ = self.tell(told);
                    continue;
                };
                let listed = Self::listed(&st.line, &slot.key, &st.line.tickets[&key]);
                Self::leave_line(&mut st, &key);
                told.ops.push(Op::TicketDelete(key));
                told.events
                    .push((listed.clone(), QueueEvent::Left(QueueResult::Removed), now));
                // The seat it held goes to the next, whatever `barging` says.
                Self::tend_line(&mut st, &spec, now, true, &mut told);
                self.write_line(&mut told);
                listed
            };
            let expired = self.tell(told);
            self.expire_some(expired, now).await;
            return Some(listed);
        }
        None
    }

    pub(super) fn queue_now(&self, now: Millis) -> Vec<Ticket> {
        let mut out = Vec::new();
        for slot in self.slots() {
            let spec = slot.spec();
            let Some(q) = spec.queue else {
                continue;
            };
            let st = slot.view();
            let mut v: Vec<&InLine> = st
                .line
                .tickets
                .values()
                .filter(|t| t.leaves(&q).0 > now)
                .collect();
            v.sort_by_key(|t| t.seq);
            for (i, t) in v.into_iter().enumerate() {
                let mut listed = Self::listed(&st.line, &slot.key, t);
                listed.position = i as u32 + 1;
                out.push(listed);
            }
        }
        out
    }

    /// The sweep's part: every line reaped and, where barging is off, promoted.
    pub(super) async fn sweep_lines(&self, now: Millis) {
        for slot in self.slots() {
            let spec = slot.spec();
            let mut told = Told::default();
            {
                let mut st = slot.lock();
                let unrated = std::mem::take(&mut st.estimates.unrated);
                st.estimates.rate.record(unrated, now);
                let promote = spec.queue.is_some_and(|q| !q.barging);
                // Also a line a reload turned off: its tickets leave.
                Self::tend_line(&mut st, &spec, now, promote, &mut told);
                self.write_line(&mut told);
            }
            let expired = self.tell(told);
            self.expire_all(expired, now).await;
        }
    }

    pub(super) fn wait_estimate_now(
        &self,
        pool: &PoolKey,
        seats: u32,
        now: Millis,
    ) -> Option<Millis> {
        let slot = self.slot(pool)?;
        let spec = slot.spec();
        let mut st = slot.view();
        Self::estimate_locked(&mut st, &spec, seats, now)
    }

    /// A new spec: leave times watched again (the line's settings may have changed).
    pub(super) fn rewatch_line(st: &mut PoolState, spec: &PoolSpec) {
        if let Some(q) = &spec.queue {
            st.line.rewatch(q);
        }
    }

    /// Tickets from the journal, in their order. Those whose time ran out while the gateway
    /// was down (as of the last poll written) leave as of then, told like any other leave;
    /// the rest come back waiting (a held seat was not durable) and polled at `now`. Tickets
    /// of pools no longer lining up are forgotten.
    pub(super) fn restore_line(
        &self,
        rows: Vec<TicketRow>,
        now: Millis,
        ops: &mut Vec<Op>,
    ) -> Vec<(Ticket, QueueEvent, Millis)> {
        let mut told = Told::default();
        let mut touched = Vec::new();
        for r in rows {
            let slot = self.slot(&r.pool);
            let Some((slot, q)) = slot.and_then(|s| s.spec().queue.map(|q| (s, q))) else {
                ops.push(Op::TicketDelete(r.key));
                continue;
            };
            slot.lock().line.insert(
                InLine {
                    id: r.id,
                    key: r.key,
                    seq: r.seq,
                    user: r.user,
                    client: r.client,
                    joined_at: r.joined_at,
                    last_poll: r.last_poll.max(r.joined_at),
                    polled_at: None,
                    ready_until: r.ready_until,
                    dirty: false,
                },
                &q,
            );
            if !touched
                .iter()
                .any(|s: &Arc<PoolSlot>| Arc::ptr_eq(s, &slot))
            {
                touched.push(slot);
            }
        }
        for slot in touched {
            let spec = slot.spec();
            let Some(q) = spec.queue else { continue };
            let mut st = slot.lock();
            Self::reap_line(&mut st, &slot.key, &q, now, &mut told);
            st.line.restart(now, &q);
            // Written back as they are now (waiting, polled now): the next restart must not
            // read a hold this one dropped.
            let rows = st.line.tickets.values().map(|t| t.row(&slot.key));
            told.ops.extend(rows.map(|r| Op::TicketPut(Box::new(r))));
        }
        ops.append(&mut told.ops);
        told.events
    }

    /// Writes the last poll of every ticket polled since the last flush.
    pub(super) async fn flush_lines(&self) -> Result<(), LedgerError> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let mut writes = Vec::new();
        for slot in self.slots() {
            let mut st = slot.view();
            let rows: Vec<Op> = st
                .line
                .tickets
                .values_mut()
                .filter_map(|t| {
                    std::mem::take(&mut t.dirty).then(|| Op::TicketPut(Box::new(t.row(&slot.key))))
                })
                .collect();
            if !rows.is_empty() {
                // Queued under the lock: a leave queued later is written after this.
                writes.push(j.submit(rows));
            }
        }
        for w in writes {
            journal::settle(w).await.map_err(LedgerError::Journal)?;
        }
        Ok(())
    }
}
