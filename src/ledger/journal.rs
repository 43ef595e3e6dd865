//! The embedded store's durable journal: a redb file written by one thread with group commit.
//!
//! Admissions and releases wait for their commit (fsync) before the gateway acts on them; all
//! writes queued while one transaction commits go into the next, so 200 racing logins cost a
//! handful of fsyncs, not 200. Background writes (a mass lapse's releases, tombstone upkeep)
//! give way: queued writes that someone's answer waits for are written first, and background
//! work rides along with those a few seats at a time while they keep coming: a login never
//! waits behind a large release write and its fsync (a write to a key that a queued earlier
//! write also touches takes that one with it, in order: the file still sees each key's
//! changes in the order memory did). Every write is answered once its transaction is durable.
//! Activity (last-seen times) goes to its own table in batches and
//! is merged at load; losing the last few seconds of it on a crash only makes seats look a
//! little older, by at most one flush period (`store.flush_interval`): state transitions
//! (standby → active, pause, resume, ending) are written when they happen, never by a flush.

use crate::domain::{Gone, Millis, PoolKey, SeatId, SeatRecord, SessionKey, TicketKey};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const SEATS: TableDefinition<u64, &[u8]> = TableDefinition::new("seats");
const ACTIVITY: TableDefinition<u64, (u64, u64)> = TableDefinition::new("activity");
/// Last request and last input of a seat, beside `activity` (created empty in journals from
/// before these existed: the times start at 0).
const INPUT: TableDefinition<u64, (u64, u64)> = TableDefinition::new("input");
/// Released cookies as journals from before [`TOMBSTONES`] kept them, keyed by cookie: moved
/// there when such a journal is opened.
const GONE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("gone");
/// Released cookies (the cookie's key, then how and until when it is remembered), by a row id
/// from the store's time-ordered ids: keyed by cookie, a mass lapse's tombstones went to
/// random leaves and cost most of each release's write.
const TOMBSTONES: TableDefinition<u64, &[u8]> = TableDefinition::new("tombstones");
/// Migrated rows' ids are below this; the store's own are far above it.
const MIGRATED_ROWS: u64 = 1 << 32;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Waiting-line tickets by key (created empty in journals from before the line existed).
const TICKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tickets");
/// redb's page cache, in bytes.
const JOURNAL_CACHE: usize = 32 << 20;
/// Batches in one transaction (as many as are queued, up to this).
const MAX_BATCHES: usize = 1024;
/// Background ops that ride along in a transaction of writes someone waits for: while
/// those keep coming, this is how background work (a mass lapse's releases, 2-3 ops a seat)
/// goes, and what it adds to a login's commit (a removed seat costs about 0.1 ms of redb's
/// time at 1M seats).
const RIDE_OPS: usize = 24;
/// Background batches in a transaction of their own while writes that answers wait for
/// keep coming (after [`SYNC_AFTER`] without one): a login that arrives meanwhile waits for
/// at most this many released seats' write.
const BACKGROUND_BUSY: usize = 16;
/// Background batches in one transaction when nothing else was written lately.
const BACKGROUND_IDLE: usize = 64;
/// How long after the last answer-blocking write background batches stay small.
const BUSY_FOR: Duration = Duration::from_millis(100);
/// How long background work waits for an answer-blocking write to ride along with, while
/// those keep coming, before it goes in a transaction of its own.
const SYNC_AFTER: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub enum Op {
    Put(Box<SeatRecord>),
    Delete(SeatId),
    /// Last activity and heartbeat of a seat.
    Activity(SeatId, Millis, Millis),
    /// Last request (any, ignored ones included) and last input of a seat.
    Input(SeatId, Millis, Millis),
    /// A released session's cookie, remembered until the given time (ended cookies stay dead),
    /// in its row.
    Tombstone(SessionKey, Gone, Millis, u64),
    /// A cookie's tombstone and its row.
    Forget(SessionKey, u64),
    Counter(String, u64),
    /// Removes a counter (a remembered ended seat id whose time is up).
    Unset(String),
    /// A ticket joined a waiting line.
    TicketPut(Box<TicketRow>),
    /// A ticket left its line.
    TicketDelete(TicketKey),
}

/// A ticket as the journal keeps it: enough to put the line back in order after a restart
/// and to tell which tickets left while the gateway was down (a held seat itself is not
/// durable: a ready ticket comes back waiting).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TicketRow {
    pub key: TicketKey,
    pub id: SeatId,
    pub pool: PoolKey,
    pub user: Option<String>,
    pub client: String,
    pub joined_at: Millis,
    /// Join order within the pool.
    pub seq: u64,
    /// The last poll as of the last flush (or the join).
    #[serde(default)]
    pub last_poll: Millis,
    /// Until when a seat was held for it, if it was ready.
    #[serde(default)]
    pub ready_until: Option<Millis>,
}

struct Batch {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), String>>>,
    /// Nobody's answer waits for it: it gives way to those that one does.
    background: bool,
}

pub struct Journal {
    tx: Option<mpsc::Sender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The thread that reads the seats at open ([`Seats`]).
    loader: Option<std::thread::JoinHandle<()>>,
    failing: Arc<AtomicBool>,
    /// The last write failed (and none has succeeded since): why.
    error: Arc<std::sync::Mutex<Option<String>>>,
}

/// A write queued in order with every other; awaiting it says whether it is durable.
pub type Written = oneshot::Receiver<Result<(), String>>;

/// What was on disk at start.
#[derive(Debug)]
pub struct Loaded {
    /// Read and parsed on a thread of its own while the caller takes them in: at a million
    /// seats, the parse and the caller's building of its memory each took about half of a
    /// restart, one after the other.
    pub seats: Seats,
    /// Released cookies, each with its row.
    pub gone: Vec<(SessionKey, Gone, Millis, u64)>,
    pub counters: Vec<(String, u64)>,
    pub tickets: Vec<TicketRow>,
}

impl Journal {
    pub fn open(path: &Path) -> Result<(Journal, Loaded), String> {
        Self::open_with(path, None)
    }

    /// Test hook: the writer waits for a message on `step` before each transaction (and runs
    /// freely once its sender is gone).
    #[cfg(test)]
    fn open_stepped(path: &Path, step: mpsc::Receiver<()>) -> Result<(Journal, Loaded), String> {
        Self::open_with(path, Some(step))
    }

    fn open_with(
        path: &Path,
        step: Option<mpsc::Receiver<()>>,
    ) -> Result<(Journal, Loaded), String> {
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
            w.open_table(TOMBSTONES).map_err(|e| e.to_string())?;
            w.open_table(META).map_err(|e| e.to_string())?;
            w.open_table(TICKETS).map_err(|e| e.to_string())?;
            w.commit().map_err(|e| e.to_string())?;
        }
        migrate_gone(&db).map_err(|e| format!("{}: {e}", path.display()))?;
        let db = Arc::new(db);
        let (seats, loader) = Seats::load(db.clone(), path.display().to_string())?;
        let loaded = match load(&db, seats) {
            Ok(l) => l,
            Err(e) => {
                // The seats' reader stops at its next chunk (nobody listens) and lets go of
                // the file, so it can be opened again at once.
                let _ = loader.join();
                return Err(format!("{}: {e}", path.display()));
            }
        };
        let (tx, rx) = mpsc::channel::<Batch>();
        let failing = Arc::new(AtomicBool::new(false));
        let error = Arc::new(std::sync::Mutex::new(None));
        let (fail, err) = (failing.clone(), error.clone());
        let writer = std::thread::Builder::new()
            .name("seatgate-journal".into())
            .spawn(move || writer(db, rx, fail, err, step))
            .map_err(|e| e.to_string())?;
        Ok((
            Journal {
                tx: Some(tx),
                writer: Some(writer),
                loader: Some(loader),
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
                background: false,
            });
        }
        wait
    }

    /// Like [`Self::submit`], for a write nobody's answer waits for (the sweep's releases):
    /// writes submitted later that an answer waits for go first unless they touch a seat,
    /// cookie or counter this one does. Awaiting it still says when it is durable.
    pub fn submit_background(&self, ops: Vec<Op>) -> Written {
        let (done, wait) = oneshot::channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Batch {
                ops,
                done: Some(done),
                background: true,
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
            let _ = tx.send(Batch {
                ops,
                done: None,
                background: false,
            });
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
        // It never waits for its reader (an unbounded channel), so it ends by itself.
        if let Some(l) = self.loader.take() {
            let _ = l.join();
        }
    }
}

/// Seat records per message from the loader thread.
const SEAT_CHUNK: usize = 4096;

/// The journal's seats in id order, each `Err` the reason the file was refused (after which
/// nothing follows).
#[derive(Debug)]
pub struct Seats {
    rx: mpsc::Receiver<Result<Vec<SeatRecord>, String>>,
    chunk: std::vec::IntoIter<SeatRecord>,
}

impl Iterator for Seats {
    type Item = Result<SeatRecord, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rec) = self.chunk.next() {
                return Some(Ok(rec));
            }
            match self.rx.recv().ok()? {
                Ok(chunk) => self.chunk = chunk.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Seats {
    /// Starts reading the seats table (with the activity and input tables merged in) on a
    /// thread of its own, from a read transaction begun here: it sees the file as it is now,
    /// whatever is written after.
    fn load(
        db: Arc<Database>,
        path: String,
    ) -> Result<(Seats, std::thread::JoinHandle<()>), String> {
        let r = db.begin_read().map_err(|e| format!("{path}: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let loader = std::thread::Builder::new()
            .name("seatgate-load".into())
            .spawn(move || {
                if let Err(e) = read_seats(&r, &tx) {
                    let _ = tx.send(Err(format!("{path}: {e}")));
                }
                // The file stays open until its last reader is done.
                drop(r);
                drop(db);
            })
            .map_err(|e| e.to_string())?;
        let seats = Seats {
            rx,
            chunk: Vec::new().into_iter(),
        };
        Ok((seats, loader))
    }
}

/// Sends the seats in chunks; stops early once nobody listens.
fn read_seats(
    r: &redb::ReadTransaction,
    tx: &mpsc::Sender<Result<Vec<SeatRecord>, String>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let seats_t = r.open_table(SEATS)?;
    let act_t = r.open_table(ACTIVITY)?;
    let input_t = r.open_table(INPUT)?;
    // The three tables are keyed by seat id, so they are read side by side in key order (a
    // merge) instead of two lookups per seat: a million seats load in a fraction of the time.
    let mut act = Merge::new(act_t.iter()?);
    let mut input = Merge::new(input_t.iter()?);
    let mut chunk = Vec::with_capacity(SEAT_CHUNK);
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
        chunk.push(rec);
        if chunk.len() == SEAT_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(SEAT_CHUNK));
            if tx.send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk));
    }
    Ok(())
}

/// Everything but the seats (which `seats` is reading meanwhile).
fn load(db: &Database, seats: Seats) -> Result<Loaded, Box<dyn std::error::Error>> {
    let r = db.begin_read()?;
    let mut out = Loaded {
        seats,
        gone: Vec::new(),
        counters: Vec::new(),
        tickets: Vec::new(),
    };
    for row in r.open_table(TOMBSTONES)?.iter()? {
        let (k, v) = row?;
        // Refused, not skipped: a tombstone left out would let an ended session back in.
        let (key, rest) = v.value().split_at_checked(16).ok_or_else(|| {
            format!(
                "released session row {:x} of {} bytes",
                k.value(),
                v.value().len()
            )
        })?;
        let key = SessionKey(key.try_into().expect("16 bytes"));
        let (gone, until) = serde_json::from_slice::<(Gone, Millis)>(rest)
            .map_err(|e| format!("released session {key:?} is unreadable: {e}"))?;
        out.gone.push((key, gone, until, k.value()));
    }
    for row in r.open_table(META)?.iter()? {
        let (k, v) = row?;
        out.counters.push((k.value().to_string(), v.value()));
    }
    for row in r.open_table(TICKETS)?.iter()? {
        let (_, v) = row?;
        // Refused, not skipped, like every other row: damage is not read as a shorter line.
        let t = serde_json::from_slice::<TicketRow>(v.value())
            .map_err(|e| format!("queue ticket is unreadable: {e}"))?;
        out.tickets.push(t);
    }
    Ok(out)
}

/// Moves the rows of a journal from before [`TOMBSTONES`] there, in one transaction; their
/// values are checked by the load that follows, like every other row.
fn migrate_gone(db: &Database) -> Result<(), Box<dyn std::error::Error>> {
    let w = db.begin_write()?;
    {
        let mut old = w.open_table(GONE)?;
        if old.is_empty()? {
            return Ok(());
        }
        let mut new = w.open_table(TOMBSTONES)?;
        let first = match new.range(..MIGRATED_ROWS)?.next_back() {
            Some(last) => last?.0.value() + 1,
            None => 1,
        };
        for (row, entry) in (first..).zip(old.iter()?) {
            let (k, v) = entry?;
            if k.value().len() != 16 {
                return Err(format!("released-session key of {} bytes", k.value().len()).into());
            }
            new.insert(row, [k.value(), v.value()].concat().as_slice())?;
        }
        old.retain(|_, _| false)?;
    }
    w.commit()?;
    Ok(())
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

/// What an op writes, for ordering: ops on different keys commute.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Seat(u64),
    Session([u8; 16]),
    Name(String),
}

/// `None`: an op whose keys are not known here, ordered with every other write.
fn key(op: &Op) -> Option<Key> {
    Some(match op {
        Op::Put(rec) => Key::Seat(rec.id.0),
        Op::Delete(id) | Op::Activity(id, ..) | Op::Input(id, ..) => Key::Seat(id.0),
        Op::Tombstone(k, ..) | Op::Forget(k, _) => Key::Session(k.0),
        Op::Counter(name, _) | Op::Unset(name) => Key::Name(name.clone()),
        _ => return None,
    })
}

/// A batch as the writer holds it: its place in the order of submission, and for a
/// background batch the keys it writes (`None`: unknown, it orders with everything).
struct Queued {
    seq: u64,
    batch: Batch,
    keys: Option<HashSet<Key>>,
}

impl Queued {
    /// Whether `later` must be written after this one (they write a key in common).
    fn orders(&self, later: &Batch) -> bool {
        let Some(keys) = &self.keys else {
            return true;
        };
        later
            .ops
            .iter()
            .any(|op| key(op).is_none_or(|k| keys.contains(&k)))
    }
}

/// The batches of the next transaction, in the order of submission. Batches someone waits
/// for go first, in order, with the earlier background batches they must follow (those
/// writing a key in common, and the background batches before those) and the next few that
/// fit in [`RIDE_OPS`]; otherwise up to `background_max` background batches.
fn next_transaction(
    urgent: &mut VecDeque<Queued>,
    background: &mut VecDeque<Queued>,
    background_max: usize,
) -> Vec<Queued> {
    if urgent.is_empty() {
        let n = background.len().min(background_max.max(1));
        return background.drain(..n).collect();
    }
    let n = urgent.len().min(MAX_BATCHES);
    let mut txn: Vec<Queued> = urgent.drain(..n).collect();
    let mut before = background
        .iter()
        .rposition(|b| txn.iter().any(|u| b.seq < u.seq && b.orders(&u.batch)))
        .map_or(0, |i| i + 1);
    // A little background work rides along (the batches next in line, while their ops fit).
    let mut ops = 0;
    while let Some(b) = background.get(before) {
        ops += b.batch.ops.len();
        if ops > RIDE_OPS {
            break;
        }
        before += 1;
    }
    if before > 0 {
        txn.extend(background.drain(..before));
        txn.sort_by_key(|q| q.seq);
    }
    txn
}

fn writer(
    db: Arc<Database>,
    rx: mpsc::Receiver<Batch>,
    failing: Arc<AtomicBool>,
    error: Arc<std::sync::Mutex<Option<String>>>,
    step: Option<mpsc::Receiver<()>>,
) {
    let mut urgent = VecDeque::new();
    let mut background = VecDeque::new();
    let mut seq = 0u64;
    let mut last_urgent: Option<Instant> = None;
    let mut queue = |b: Batch, urgent: &mut VecDeque<Queued>, bg: &mut VecDeque<Queued>| {
        seq += 1;
        if b.background {
            let keys = b.ops.iter().map(key).collect::<Option<HashSet<_>>>();
            bg.push_back(Queued {
                seq,
                batch: b,
                keys,
            });
        } else {
            urgent.push_back(Queued {
                seq,
                batch: b,
                keys: None,
            });
        }
    };
    let run = |batches: &[Batch]| {
        let result = if failing.load(Ordering::Acquire) {
            Err("journal write failed (test hook)".to_string())
        } else {
            write(&db, batches).map_err(|e| e.to_string())
        };
        if let Err(e) = &result {
            log::error!("journal commit failed: {e}");
        }
        *error.lock().unwrap_or_else(|e| e.into_inner()) = result.clone().err();
        result
    };
    let answer = |batches: Vec<Batch>, result: &Result<(), String>| {
        for b in batches {
            if let Some(done) = b.done {
                let _ = done.send(result.clone());
            }
        }
    };
    loop {
        let busy = last_urgent.is_some_and(|t| t.elapsed() < BUSY_FOR);
        if urgent.is_empty() && background.is_empty() {
            match rx.recv() {
                Ok(b) => queue(b, &mut urgent, &mut background),
                Err(_) => break,
            }
        } else if urgent.is_empty() && busy {
            // Background work waits a moment for a write someone waits for to ride along with.
            let until = Instant::now() + SYNC_AFTER;
            while urgent.is_empty() {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(b) => queue(b, &mut urgent, &mut background),
                    Err(_) => break,
                }
            }
        }
        if let Some(s) = &step {
            let _ = s.recv();
        }
        while let Ok(b) = rx.try_recv() {
            queue(b, &mut urgent, &mut background);
        }
        if !urgent.is_empty() {
            last_urgent = Some(Instant::now());
        }
        let max = if busy {
            BACKGROUND_BUSY
        } else {
            BACKGROUND_IDLE
        };
        let batches: Vec<Batch> = next_transaction(&mut urgent, &mut background, max)
            .into_iter()
            .map(|q| q.batch)
            .collect();
        let result = run(&batches);
        answer(batches, &result);
    }
}

fn write(db: &Database, batches: &[Batch]) -> Result<(), Box<dyn std::error::Error>> {
    let w = db.begin_write()?;
    {
        let mut seats = w.open_table(SEATS)?;
        let mut act = w.open_table(ACTIVITY)?;
        let mut input = w.open_table(INPUT)?;
        let mut gone = w.open_table(TOMBSTONES)?;
        let mut meta = w.open_table(META)?;
        let mut tickets = w.open_table(TICKETS)?;
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
                Op::Tombstone(k, g, until, row) => {
                    let mut v = k.0.to_vec();
                    serde_json::to_writer(&mut v, &(g, until))?;
                    gone.insert(*row, v.as_slice())?;
                }
                Op::Forget(_, row) => {
                    gone.remove(*row)?;
                }
                Op::Counter(name, v) => {
                    meta.insert(name.as_str(), *v)?;
                }
                Op::Unset(name) => {
                    meta.remove(name.as_str())?;
                }
                Op::TicketPut(t) => {
                    tickets.insert(t.key.0.as_slice(), serde_json::to_vec(t)?.as_slice())?;
                }
                Op::TicketDelete(k) => {
                    tickets.remove(k.0.as_slice())?;
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
            .map(|r| {
                let r = r.unwrap();
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

    fn ids_on_disk(path: &Path) -> Vec<u64> {
        let (_j, loaded) = Journal::open(path).unwrap();
        loaded.seats.map(|r| r.unwrap().id.0).collect()
    }

    /// A login's write queued after a large background release write is written first, on
    /// its own: the release is not yet durable when the login's write is (the writer is
    /// stepped one transaction at a time, so this is order, not timing).
    #[tokio::test]
    async fn an_admission_does_not_queue_behind_a_large_release_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let (step, steps) = mpsc::channel();
            let (j, _) = Journal::open_stepped(&path, steps).unwrap();
            // Dropped before `j`, whose drop waits for the writer, should an assert fail.
            let step = step;
            step.send(()).unwrap();
            j.commit((1..=2_000).map(|i| Op::Put(Box::new(rec(i)))).collect())
                .await
                .unwrap();
            let mut release =
                j.submit_background((1..=2_000).map(|i| Op::Delete(SeatId(i))).collect());
            let login = j.submit(vec![Op::Put(Box::new(rec(5_000)))]);
            step.send(()).unwrap();
            settle(login).await.unwrap();
            assert!(
                matches!(release.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
                "the release was written with the login (or before it)"
            );
            step.send(()).unwrap();
            settle(release).await.unwrap();
        }
        assert_eq!(ids_on_disk(&path), [5_000]);
    }

    /// A write that touches what a queued background write touches follows it, in the same
    /// transaction: here a seat released in the background and written again after (the file
    /// must end with the seat, as memory did); a later background write never goes first.
    #[tokio::test]
    async fn a_write_to_a_key_of_a_queued_background_write_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let (step, steps) = mpsc::channel();
            let (j, _) = Journal::open_stepped(&path, steps).unwrap();
            // Dropped before `j`, whose drop waits for the writer, should an assert fail.
            let step = step;
            step.send(()).unwrap();
            j.commit(vec![Op::Put(Box::new(rec(7))), Op::Put(Box::new(rec(9)))])
                .await
                .unwrap();
            // Background writes are in order among themselves: one before the release comes
            // along with it (too large to ride along for its own sake).
            let mut other =
                j.submit_background((1_000..1_100).map(|i| Op::Delete(SeatId(i))).collect());
            let mut release = j.submit_background(vec![Op::Delete(SeatId(7))]);
            let put = j.submit(vec![Op::Put(Box::new(rec(7)))]);
            // Submitted after the write it touches: never before it (it may ride along).
            let later = j.submit_background(vec![Op::Delete(SeatId(9))]);
            step.send(()).unwrap();
            settle(put).await.unwrap();
            assert!(
                matches!(release.try_recv(), Ok(Ok(()))),
                "written with the put"
            );
            assert!(
                matches!(other.try_recv(), Ok(Ok(()))),
                "written before the release"
            );
            drop(step);
            settle(later).await.unwrap();
        }
        assert_eq!(ids_on_disk(&path), [7]);
    }
}
