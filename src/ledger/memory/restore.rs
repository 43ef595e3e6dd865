//! Opening the embedded store: the journal replayed into memory, seats that expired while the
//! gateway was down released as of their deadline, and a row that cannot be read refused.

use super::*;

impl MemoryLedger {
    /// Opens (or creates) the journal at `path` and restores the seats that are still valid
    /// under `pools`, in the state they were in; seats that expired while the gateway was down
    /// are released (as of when they expired), those of pools no longer configured with
    /// reason `config`.
    pub async fn open(
        path: &Path,
        pools: &[PoolSpec],
        observer: Arc<dyn LedgerObserver>,
        now: Millis,
    ) -> Result<Self, LedgerError> {
        let (journal, loaded) = Journal::open(path).map_err(LedgerError::Journal)?;
        let mut me = Self::volatile(observer);
        me.journal = Some(journal);
        me.configure(pools);
        let mut ops = Vec::new();
        for (name, v) in loaded.counters {
            let stat = ["overflow_ms", "peak", "denied"]
                .into_iter()
                .find_map(|stat| {
                    let (product, pool) = name
                        .strip_prefix(stat)?
                        .strip_prefix('/')?
                        .split_once('/')?;
                    Some((stat, PoolKey::new(product, pool)))
                });
            if let Some((stat, key)) = stat {
                if let Some(slot) = me.slot(&key) {
                    let mut st = slot.lock();
                    match stat {
                        "overflow_ms" => st.overflow_used_ms = v,
                        "peak" => st.stats_written.0 = v as u32,
                        _ => st.stats_written.1 = v,
                    }
                }
            } else if let Some(id) = name.strip_prefix("ended/") {
                let id = id.parse::<SeatId>().map_err(|_| {
                    LedgerError::Corrupt(format!("journal counter `{name}`: bad seat id"))
                })?;
                if v > now {
                    me.remember_ended(id, v, None);
                } else {
                    ops.push(Op::Unset(name.clone()));
                }
            } else {
                return Err(LedgerError::Corrupt(format!(
                    "journal counter `{name}`: unknown name"
                )));
            }
        }
        for (key, gone, until, row) in loaded.gone {
            // Tombstone rows come only from this source: a new one never lands on an old one,
            // even after the clock went back. (Restored seat ids may be random ones from before
            // ids grew with time; a fresh seat id is checked against them instead.)
            me.ids.after(row);
            if until > now {
                me.keep_gone(key, gone, until, row, &mut ops);
            } else {
                ops.push(Op::Forget(key, row));
            }
        }
        let mut dead = Vec::new();
        for rec in loaded.seats {
            let mut rec = rec.map_err(LedgerError::Journal)?;
            let Some(slot) = me.slot(&rec.pool) else {
                dead.push((rec, ReleaseReason::Config, now, 24 * 3_600_000));
                continue;
            };
            // Moved, not copied: the record is made again from the seat if it has expired.
            let live = Arc::new(Live {
                id: rec.id,
                slot: slot.clone(),
                user: rec.user.take(),
                device: rec.device.take(),
                client: std::mem::take(&mut rec.client),
                started_at: rec.started_at,
                overflow: AtomicBool::new(rec.overflow),
                last_activity: AtomicU64::new(rec.last_activity),
                last_heartbeat: AtomicU64::new(rec.last_heartbeat),
                last_request: AtomicU64::new(rec.last_request),
                last_input: AtomicU64::new(rec.last_input),
                state: AtomicU8::new(state_to_u8(rec.state)),
                ending_at: AtomicU64::new(rec.ending_at.unwrap_or(0)),
                dirty: AtomicBool::new(false),
                session: Mutex::new(rec.session),
                ended_by: Mutex::new(rec.ended_by.take()),
            });
            if let Some(reason) = live.expired(now) {
                let spec = slot.spec();
                let at = live.ended_at(now);
                let mut st = slot.lock();
                if live.overflow() && rec.state.holds_seat() {
                    st.overflow_used_ms += live.overflow_ms(&spec, now);
                    ops.push(Op::Counter(
                        overflow_counter(&slot.key),
                        st.overflow_used_ms,
                    ));
                }
                dead.push((live.record(), reason, at, spec.max_lifetime));
                continue;
            }
            if rec.state.holds_seat() {
                slot.lock().insert_seat(live.clone(), &slot.spec(), now);
            } else {
                me.watch_other(&live, now);
            }
            if let Some(k) = rec.session {
                me.by_session.insert(k, live.clone());
            }
            me.by_id.insert(rec.id, live);
        }
        let queue_events = me.restore_line(loaded.tickets, now, &mut ops);
        let mut released = Vec::new();
        for (rec, reason, at, ttl) in dead {
            ops.push(Op::Delete(rec.id));
            if let Some(k) = rec.session {
                let g = Gone::Released(reason);
                me.remember_gone(k, g, at + ttl, &mut ops);
            }
            if reason == ReleaseReason::Ended {
                me.remember_ended(rec.id, at + ENDED_FOR, Some(&mut ops));
            }
            released.push(Released {
                record: rec,
                reason,
            });
        }
        me.submit(ops).durable().await?;
        for r in released {
            me.observer.released(&r.record, r.reason);
        }
        for (t, ev, at) in queue_events {
            me.observer.queue_event(&t, ev, at);
        }
        for slot in me.slots() {
            let mut st = slot.lock();
            st.peak = st.stats_written.0.max(st.seats.len() as u32);
            st.denied = st.stats_written.1;
        }
        Ok(me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::NoObserver;
    use redb::ReadableTableMetadata;

    /// A journal whose rows this gateway cannot read is refused at open, naming the row.
    #[tokio::test]
    async fn an_unreadable_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        type Damage = fn(&redb::WriteTransaction);
        let cases: [(&str, Damage); 5] = [
            ("seat record 7", |w| {
                let t = redb::TableDefinition::<u64, &[u8]>::new("seats");
                w.open_table(t)
                    .unwrap()
                    .insert(7, &b"{\"state\":\"actve\"}"[..])
                    .unwrap();
            }),
            ("released session", |w| {
                let t = redb::TableDefinition::<&[u8], &[u8]>::new("gone");
                let v = br#"[{"released":"tired"},1]"#;
                w.open_table(t)
                    .unwrap()
                    .insert(&[1u8; 16][..], &v[..])
                    .unwrap();
            }),
            ("journal counter `ended/xyz`", |w| {
                let t = redb::TableDefinition::<&str, u64>::new("meta");
                w.open_table(t).unwrap().insert("ended/xyz", 1).unwrap();
            }),
            ("queue ticket", |w| {
                let t = redb::TableDefinition::<&[u8], &[u8]>::new("tickets");
                let v = br#"{"key":[1,2],"seq":"first"}"#;
                w.open_table(t)
                    .unwrap()
                    .insert(&[1u8; 16][..], &v[..])
                    .unwrap();
            }),
            ("journal counter `seats_sold`", |w| {
                let t = redb::TableDefinition::<&str, u64>::new("meta");
                w.open_table(t).unwrap().insert("seats_sold", 1).unwrap();
            }),
        ];
        for (i, (says, write)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("j{i}.redb"));
            {
                let db = redb::Database::create(&path).unwrap();
                let w = db.begin_write().unwrap();
                write(&w);
                w.commit().unwrap();
            }
            let Err(e) = MemoryLedger::open(&path, &[], Arc::new(NoObserver), 10).await else {
                panic!("opened a journal with an unreadable row ({says})");
            };
            assert!(e.to_string().contains(says), "{e} should name {says}");
        }
    }

    /// A journal from before the tombstones' own table kept them by cookie: opened, an ended
    /// cookie stays ended, then and after the next restart (the rows moved, once).
    #[tokio::test]
    async fn a_journal_with_tombstones_by_cookie_keeps_them() {
        use crate::domain::{Gone, ReleaseReason, SessionKey, Touch};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let (ended, replaced) = (SessionKey::new("p", "ended"), SessionKey::new("p", "old"));
        {
            let db = redb::Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let t = redb::TableDefinition::<&[u8], &[u8]>::new("gone");
                let mut t = w.open_table(t).unwrap();
                t.insert(&ended.0[..], &br#"[{"released":"ended"},1000000]"#[..])
                    .unwrap();
                t.insert(
                    &replaced.0[..],
                    &br#"[{"released":"replaced"},1000000]"#[..],
                )
                .unwrap();
            }
            w.commit().unwrap();
        }
        for _restart in 0..2 {
            let l = MemoryLedger::open(&path, &[], Arc::new(NoObserver), 10)
                .await
                .unwrap();
            assert_eq!(
                l.touch(&ended, 20).await.unwrap(),
                Touch::Gone(Gone::Released(ReleaseReason::Ended))
            );
            assert_eq!(
                l.touch(&replaced, 20).await.unwrap(),
                Touch::Gone(Gone::Released(ReleaseReason::Replaced))
            );
            assert_eq!(
                l.touch(&SessionKey::new("p", "never"), 20).await.unwrap(),
                Touch::Gone(Gone::Unknown)
            );
        }
        let db = redb::Database::open(&path).unwrap();
        let r = db.begin_read().unwrap();
        let old = redb::TableDefinition::<&[u8], &[u8]>::new("gone");
        assert!(r.open_table(old).unwrap().is_empty().unwrap(), "moved");
        let new = redb::TableDefinition::<u64, &[u8]>::new("tombstones");
        assert_eq!(r.open_table(new).unwrap().len().unwrap(), 2, "once");
    }
}
