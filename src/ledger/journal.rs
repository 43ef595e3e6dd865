//! The embedded store's durable journal: a redb file written by one thread with group commit.
//!
//! Admissions and releases wait for their commit (fsync) before the gateway acts on them; all
//! writes queued while one transaction commits go into the next, so 200 racing logins cost a
//! handful of fsyncs, not 200. Activity (last-seen times) goes to its own table in batches and
//! is merged at load; losing the last few seconds of it on a crash only makes seats look a
//! little older, by at most one flush period (`store.flush_interval`): state transitions
//! (standby → active, pause, resume, ending) are written when they happen, never by a flush.

use crate::domain::{Gone, Millis, SeatId, SeatRecord, SessionKey};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

const SEATS: TableDefinition<u64, &[u8]> = TableDefinition::new("seats");
const ACTIVITY: TableDefinition<u64, (u64, u64)> = TableDefinition::new("activity");
/// Last request and last input of a seat, beside `activity` (created empty in journals from
/// before these existed: the times start at 0).
const INPUT: TableDefinition<u64, (u64, u64)> = TableDefinition::new("input");
const GONE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gone");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// redb's page cache, in bytes.
const JOURNAL_CACHE: usize = 32 << 20;

#[derive(Debug, Clone)]
pub enum Op {
    Put(Box<SeatRecord>),
    Delete(SeatId),
    /// Last activity and heartbeat of a seat.
    Activity(SeatId, Millis, Millis),
    /// Last request (any, ignored ones included) and last input of a seat.
    Input(SeatId, Millis, Millis),
    /// A released session's cookie, remembered until the given time (ended cookies stay dead).
    Tombstone(SessionKey, Gone, Millis),
    Forget(SessionKey),
    Counter(String, u64),
    /// Removes a counter (a remembered ended seat id whose time is up).
    Unset(String),
}

struct Batch {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

pub struct Journal {
    tx: Option<mpsc::Sender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    failing: Arc<AtomicBool>,
    /// The last write failed (and none has succeeded since): why.
    error: Arc<std::sync::Mutex<Option<String>>>,
}

/// A write queued in order with every other; awaiting it says whether it is durable.
pub type Written = oneshot::Receiver<Result<(), String>>;

/// What was on disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub seats: Vec<SeatRecord>,
    pub gone: Vec<(SessionKey, Gone, Millis)>,
    pub counters: Vec<(String, u64)>,
}

impl Journal {
    pub fn open(path: &Path) -> Result<(Journal, Loaded), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // redb keeps up to its cache size (1 GiB by default) of the file's pages in the
        // process: at a million sessions that was most of the gateway's memory for a file
        // that is written, not read, after the open. The kernel's page cache still holds the
        // rest of the file.
        let db = redb::Builder::new()
            .set_cache_size(JOURNAL_CACHE)
            .create(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        {
            let w = db.begin_write().map_err(|e| e.to_string())?;
            w.open_table(SEATS).map_err(|e| e.to_string())?;
            w.open_table(ACTIVITY).map_err(|e| e.to_string())?;
            w.open_table(INPUT).map_err(|e| e.to_string())?;
            w.open_table(GONE).map_err(|e| e.to_string())?;
            w.open_table(META).map_err(|e| e.to_string())?;
            w.commit().map_err(|e| e.to_string())?;
        }
        let loaded = load(&db).map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Batch>();
        let failing = Arc::new(AtomicBool::new(false));
        let error = Arc::new(std::sync::Mutex::new(None));
        let (fail, err) = (failing.clone(), error.clone());
        let writer = std::thread::Builder::new()
            .name("seatgate-journal".into())
            .spawn(move || writer(db, rx, fail, err))
            .map_err(|e| e.to_string())?;
        Ok((
            Journal {
                tx: Some(tx),
                writer: Some(writer),
                failing,
                error,
            },
            loaded,
        ))
    }

    /// Queues `ops` behind every write queued before, without waiting: callers queue while
    /// they hold the lock under which they changed memory, so the file sees changes in the
    /// order memory did, and await the answer after letting go of the lock.
    pub fn submit(&self, ops: Vec<Op>) -> Written {
        let (done, wait) = oneshot::channel();
        if let Some(tx) = &self.tx {
            // A stopped writer drops `done`: the caller then hears "writer stopped".
            let _ = tx.send(Batch {
                ops,
                done: Some(done),
            });
        }
        wait
    }

    /// Queues `ops` and waits until they are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), String> {
        settle(self.submit(ops)).await
    }

    /// Queues `ops` without waiting (activity, tombstone upkeep).
    pub fn enqueue(&self, ops: Vec<Op>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Batch { ops, done: None });
        }
    }

    /// Why the last write failed, while no write has succeeded since (`/healthz`).
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Test hook: every write fails while set, as a full or failing disk would.
    #[doc(hidden)]
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::Release);
    }
}

/// Waits for a submitted write.
pub async fn settle(w: Written) -> Result<(), String> {
    w.await.map_err(|_| "journal writer stopped".to_string())?
}

impl Drop for Journal {
    /// Writes what is queued and closes the file, so that it can be opened again at once
    /// (redb allows one open database per file).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn load(db: &Database) -> Result<Loaded, Box<dyn std::error::Error>> {
    let r = db.begin_read()?;
    let seats_t = r.open_table(SEATS)?;
    let act_t = r.open_table(ACTIVITY)?;
    let input_t = r.open_table(INPUT)?;
    let mut out = Loaded {
        seats: Vec::with_capacity(seats_t.len()? as usize),
        ..Loaded::default()
    };
    // The three tables are keyed by seat id, so they are read side by side in key order (a
    // merge) instead of two lookups per seat: a million seats load in a fraction of the time.
    let mut act = Merge::new(act_t.iter()?);
    let mut input = Merge::new(input_t.iter()?);
    for row in seats_t.iter()? {
        let (k, v) = row?;
        let id = k.value();
        // Refused, not skipped: a seat left out would free a seat its session still uses.
        let mut rec = serde_json::from_slice::<SeatRecord>(v.value())
            .map_err(|e| format!("seat record {id:x} is unreadable: {e}"))?;
        if let Some((act, hb)) = act.get(id)? {
            rec.last_activity = rec.last_activity.max(act);
            rec.last_heartbeat = rec.last_heartbeat.max(hb);
        }
        if let Some((req, input)) = input.get(id)? {
            rec.last_request = rec.last_request.max(req);
            rec.last_input = rec.last_input.max(input);
        }
        out.seats.push(rec);
    }
    for row in r.open_table(GONE)?.iter()? {
        let (k, v) = row?;
        // Refused, not skipped: a tombstone left out would let an ended session back in.
        let key = <[u8; 16]>::try_from(k.value())
            .map(SessionKey)
            .map_err(|_| format!("released-session key of {} bytes", k.value().len()))?;
        let (gone, until) = serde_json::from_slice::<(Gone, Millis)>(v.value())
            .map_err(|e| format!("released session {key:?} is unreadable: {e}"))?;
        out.gone.push((key, gone, until));
    }
    for row in r.open_table(META)?.iter()? {
        let (k, v) = row?;
        out.counters.push((k.value().to_string(), v.value()));
    }
    Ok(out)
}

/// A table of times by seat id, read in key order alongside the seats table.
struct Merge<'a> {
    rows: redb::Range<'a, u64, (u64, u64)>,
    next: Option<(u64, (u64, u64))>,
}

impl<'a> Merge<'a> {
    fn new(rows: redb::Range<'a, u64, (u64, u64)>) -> Self {
        Merge { rows, next: None }
    }

    /// The row of `id`; ids must be asked for in increasing order.
    fn get(&mut self, id: u64) -> Result<Option<(u64, u64)>, redb::StorageError> {
        loop {
            match self.next {
                Some((k, v)) if k == id => return Ok(Some(v)),
                Some((k, _)) if k > id => return Ok(None),
                _ => match self.rows.next() {
                    Some(row) => {
                        let (k, v) = row?;
                        self.next = Some((k.value(), v.value()));
                    }
                    None => return Ok(None),
                },
            }
        }
    }
}

fn writer(
    db: Database,
    rx: mpsc::Receiver<Batch>,
    failing: Arc<AtomicBool>,
    error: Arc<std::sync::Mutex<Option<String>>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
            if batches.len() >= 1024 {
                break;
            }
        }
        let result = if failing.load(Ordering::Acquire) {
            Err("journal write failed (test hook)".to_string())
        } else {
            write(&db, &batches).map_err(|e| e.to_string())
        };
        if let Err(e) = &result {
            log::error!("journal commit failed: {e}");
        }
        *error.lock().unwrap_or_else(|e| e.into_inner()) = result.clone().err();
        for b in batches {
            if let Some(done) = b.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn write(db: &Database, batches: &[Batch]) -> Result<(), Box<dyn std::error::Error>> {
    let w = db.begin_write()?;
    {
        let mut seats = w.open_table(SEATS)?;
        let mut act = w.open_table(ACTIVITY)?;
        let mut input = w.open_table(INPUT)?;
        let mut gone = w.open_table(GONE)?;
        let mut meta = w.open_table(META)?;
        for op in batches.iter().flat_map(|b| b.ops.iter()) {
            match op {
                Op::Put(rec) => {
                    seats.insert(rec.id.0, serde_json::to_vec(rec)?.as_slice())?;
                    act.insert(rec.id.0, (rec.last_activity, rec.last_heartbeat))?;
                    input.insert(rec.id.0, (rec.last_request, rec.last_input))?;
                }
                Op::Delete(id) => {
                    seats.remove(id.0)?;
                    act.remove(id.0)?;
                    input.remove(id.0)?;
                }
                Op::Input(id, r, i) => {
                    if seats.get(id.0)?.is_some() {
                        input.insert(id.0, (*r, *i))?;
                    }
                }
                Op::Activity(id, a, h) => {
                    // Only for seats still on disk: a late flush must not resurrect a release.
                    if seats.get(id.0)?.is_some() {
                        act.insert(id.0, (*a, *h))?;
                    }
                }
                Op::Tombstone(k, g, until) => {
                    gone.insert(k.0.as_slice(), serde_json::to_vec(&(g, until))?.as_slice())?;
                }
                Op::Forget(k) => {
                    gone.remove(k.0.as_slice())?;
                }
                Op::Counter(name, v) => {
                    meta.insert(name.as_str(), *v)?;
                }
                Op::Unset(name) => {
                    meta.remove(name.as_str())?;
                }
            }
        }
    }
    w.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PoolKey, SeatState};

    fn rec(id: u64) -> SeatRecord {
        SeatRecord {
            id: SeatId(id),
            pool: PoolKey::new("p", "default"),
            user: None,
            device: None,
            client: "web".into(),
            session: None,
            started_at: 1,
            last_activity: 1,
            last_heartbeat: 0,
            last_request: 1,
            last_input: 0,
            state: SeatState::Active,
            ending_at: None,
            overflow: false,
            ended_by: None,
        }
    }

    /// The activity and input tables, read side by side with the seats, reach the right seat
    /// when some seats have no newer row and a row's seat sorts between others.
    #[tokio::test]
    async fn later_times_are_merged_into_their_own_seats_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let (j, _) = Journal::open(&path).unwrap();
            let mut ops: Vec<Op> = [9, 3, 7, 1, 5]
                .into_iter()
                .map(|i| Op::Put(Box::new(rec(i))))
                .collect();
            ops.extend([
                Op::Activity(SeatId(3), 30, 31),
                Op::Activity(SeatId(9), 90, 0),
                Op::Input(SeatId(1), 10, 11),
                Op::Input(SeatId(7), 70, 71),
                // Not on disk: ignored, and no other seat's row.
                Op::Activity(SeatId(4), 40, 41),
            ]);
            j.commit(ops).await.unwrap();
        }
        let (_j, loaded) = Journal::open(&path).unwrap();
        let times: Vec<_> = loaded
            .seats
            .iter()
            .map(|r| {
                let t = (
                    r.last_activity,
                    r.last_heartbeat,
                    r.last_request,
                    r.last_input,
                );
                (r.id.0, t)
            })
            .collect();
        assert_eq!(
            times,
            [
                (1, (1, 0, 10, 11)),
                (3, (30, 31, 1, 0)),
                (5, (1, 0, 1, 0)),
                (7, (1, 0, 70, 71)),
                (9, (90, 0, 1, 0)),
            ]
        );
    }
}
