//! Append-only audit log: one JSON object per line, UTC time, a monotonic sequence number.
//!
//! Lines are written by one thread so callers never block on disk. The sequence number is
//! taken and the line queued under one lock, so lines reach the file in sequence order; on
//! start it continues from the last line already in the file, so a reader can spot a missing
//! or removed line across restarts. Wall-clock jumps (NTP steps, VM resumes) are detected
//! against the monotonic clock and recorded, because every timeout decision depends on wall
//! time and an auditor must be able to see when it jumped.
//!
//! With `hash_users`, user names are written as a keyed hash (HMAC-SHA256 under a random key
//! kept next to the log in `<path>.key`): the same user gets the same token in every line and
//! across restarts, so reports still work, but the token cannot be reversed by hashing a list
//! of likely names.

use crate::crypto::hmac_sha256;
use crate::domain::{Millis, QueueEvent, QueueResult, ReleaseReason, SeatRecord, Ticket};
use crate::ledger::LedgerObserver;
use serde_json::{json, Map, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Instant, SystemTime};

const JUMP_TOLERANCE_MS: i64 = 2_000;
/// How much of an existing log is read back to find the last sequence number.
const TAIL_BYTES: u64 = 64 * 1024;

struct Writer {
    tx: mpsc::Sender<String>,
    seq: u64,
    clock: (Instant, SystemTime),
}

pub struct Audit {
    writer: Option<Mutex<Writer>>,
    user_key: Option<[u8; 32]>,
}

/// The `seq` of the last complete line of `file`, 0 for an empty file. Only the edges of what
/// is read may be torn (the window's first line, cut by the window; a last line a crash cut
/// short): any other line that is not an audit line with a `seq` is refused, so a damaged or
/// foreign file never restarts the sequence at 1. Also says whether the file ends in a torn
/// line (the next line must then start on a line of its own).
fn last_seq(file: &mut std::fs::File) -> Result<(u64, bool), String> {
    let len = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    if len == 0 {
        return Ok((0, false));
    }
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let tail = String::from_utf8_lossy(&raw);
    let torn_end = !tail.ends_with('\n');
    let lines: Vec<&str> = tail.lines().collect();
    let n = lines.len();
    for (i, l) in lines.iter().enumerate().rev() {
        let edge = (i == 0 && start > 0) || (i + 1 == n && torn_end);
        match serde_json::from_str::<Value>(l) {
            Ok(v) => {
                return v
                    .get("seq")
                    .and_then(Value::as_u64)
                    .map(|seq| (seq, torn_end))
                    .ok_or_else(|| format!("its last line has no seq: {l}"));
            }
            Err(_) if edge || l.trim().is_empty() => continue,
            Err(e) => return Err(format!("line {} from the end is not JSON: {e}", n - i)),
        }
    }
    Err(format!(
        "no complete line in its last {} bytes",
        len.min(TAIL_BYTES)
    ))
}

/// The user-hashing key: read from `key_path`, or created there (owner-only) on first use.
fn user_key(key_path: &Path) -> Result<[u8; 32], String> {
    let parse = |text: &str| -> Option<[u8; 32]> {
        let text = text.trim();
        let mut k = [0u8; 32];
        if text.len() != 64 {
            return None;
        }
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(k)
    };
    match std::fs::read_to_string(key_path) {
        Ok(text) => parse(&text).ok_or_else(|| {
            format!(
                "{}: not a 64-hex-digit key (delete it to make a new one; old hashes then change)",
                key_path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k: [u8; 32] = rand::random();
            let hex = hex::encode(k);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            opts.open(key_path)
                .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()))
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            Ok(k)
        }
        Err(e) => Err(format!("{}: {e}", key_path.display())),
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Audit {
    /// An audit log that drops everything (no `audit:` in the config).
    pub fn disabled() -> Self {
        Audit {
            writer: None,
            user_key: None,
        }
    }

    pub fn open(path: &Path, hash_users: bool) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (seq, torn) = last_seq(&mut file).map_err(|e| format!("{}: {e}", path.display()))?;
        if torn {
            file.write_all(b"\n")
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let user_key = if hash_users {
            let mut key_path = path.as_os_str().to_owned();
            key_path.push(".key");
            Some(user_key(Path::new(&key_path))?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("seatgate-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut buf = line;
                    while let Ok(more) = rx.try_recv() {
                        buf.push_str(&more);
                    }
                    if let Err(e) = file.write_all(buf.as_bytes()).and_then(|_| file.flush()) {
                        log::error!("audit log write failed: {e}");
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let a = Audit {
            writer: Some(Mutex::new(Writer {
                tx,
                seq,
                clock: (Instant::now(), SystemTime::now()),
            })),
            user_key,
        };
        a.record(
            "start",
            json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}),
        );
        Ok(a)
    }

    /// A user name as it may appear in the log (a keyed hash with `hash_users`).
    pub fn user(&self, user: Option<&str>) -> Value {
        match (user, &self.user_key) {
            (None, _) => Value::Null,
            (Some(u), Some(key)) => {
                let d = hmac_sha256(key, u.as_bytes());
                Value::String(format!("hmac:{}", hex::encode(&d[..8])))
            }
            (Some(u), None) => Value::String(u.to_string()),
        }
    }

    /// Records `event` with `fields` (an object); adds `ts`, `seq` and `event`.
    pub fn record(&self, event: &str, fields: Value) {
        let Some(w) = &self.writer else { return };
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("event".into(), json!(event));
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(skew) = check_clock(&mut w.clock) {
            let mut jump = Map::new();
            jump.insert("event".into(), json!("clock_jump"));
            jump.insert("skew_ms".into(), json!(skew));
            w.send(jump);
        }
        w.send(obj);
    }

    /// A ticket as its line events name it: the public id (never the cookie), the user as
    /// typed at the login that joined (hashed like any user with `hash_users`).
    pub fn ticket_fields(&self, t: &Ticket) -> Value {
        json!({
            "ticket": t.id.to_string(),
            "product": t.pool.product,
            "pool": t.pool.pool,
            "user": self.user(t.user.as_deref()),
            "client": t.client,
        })
    }

    pub fn seat_fields(&self, seat: &SeatRecord) -> Value {
        json!({
            "seat": seat.id.to_string(),
            "product": seat.pool.product,
            "pool": seat.pool.pool,
            "user": self.user(seat.user.as_deref()),
            "client": seat.client,
        })
    }
}

impl Writer {
    fn send(&mut self, mut obj: Map<String, Value>) {
        self.seq += 1;
        obj.insert("seq".into(), json!(self.seq));
        obj.insert("ts".into(), json!(now_rfc3339()));
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let _ = self.tx.send(line);
    }
}

/// How far wall time moved apart from monotonic time since the last line (ms), when that is
/// beyond what scheduling noise explains.
fn check_clock(last: &mut (Instant, SystemTime)) -> Option<i64> {
    let (now_i, now_w) = (Instant::now(), SystemTime::now());
    let mono = now_i.duration_since(last.0).as_millis() as i64;
    let wall = match now_w.duration_since(last.1) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    *last = (now_i, now_w);
    let skew = wall - mono;
    (skew.abs() > JUMP_TOLERANCE_MS).then_some(skew)
}

impl LedgerObserver for Audit {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason) {
        let mut f = self.seat_fields(seat);
        if let Some(by) = &seat.ended_by {
            f["by"] = json!(by);
        }
        // A pause frees the seat but keeps the session: its own event, not a release.
        if reason == ReleaseReason::Paused {
            self.record("pause", f);
        } else {
            f["reason"] = json!(reason.as_str());
            self.record("release", f);
        }
    }

    fn resumed(&self, seat: &SeatRecord) {
        self.record("resume", self.seat_fields(seat));
    }

    fn queue_event(&self, ticket: &Ticket, ev: QueueEvent, at: Millis) {
        let mut f = self.ticket_fields(ticket);
        match ev {
            QueueEvent::Joined => {
                f["position"] = json!(ticket.position);
                self.record("queue_join", f);
            }
            QueueEvent::Ready => {
                f["ready_until"] = json!(ticket.ready_until.map(rfc3339));
                self.record("queue_ready", f);
            }
            QueueEvent::Left(result) => {
                f["result"] = json!(result.as_str());
                if result == QueueResult::Admitted {
                    // Seconds with millisecond precision, as `at - joined_at` measures it.
                    let wait = at.saturating_sub(ticket.joined_at);
                    f["wait_seconds"] = json!(wait as f64 / 1000.0);
                }
                self.record("queue_leave", f);
            }
        }
    }
}

/// The log's time format, which the admin API's times share.
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_lines(path: &Path, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let t = std::fs::read_to_string(path).unwrap_or_default();
            if t.lines().count() >= n || Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn writes_json_lines_with_sequence_and_keyed_user_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let a = Audit::open(&path, true).unwrap();
        let alice = a.user(Some("alice"));
        a.record("admit", json!({"user": alice}));
        a.record("deny", json!({}));
        drop(a);
        let lines = read_lines(&path, 3);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["event"], "start");
        assert_eq!(lines[1]["seq"], 2);
        assert_eq!(lines[2]["seq"], 3);
        assert_eq!(lines[1]["event"], "admit");
        let token = lines[1]["user"].as_str().unwrap();
        assert!(token.starts_with("hmac:") && !token.contains("alice"));
        assert!(lines[1]["ts"].as_str().unwrap().ends_with('Z'));

        // A restart continues the sequence and hashes the same user the same way; without the
        // key (another log) the same name hashes differently.
        let a = Audit::open(&path, true).unwrap();
        assert_eq!(a.user(Some("alice")), alice);
        a.record("release", json!({}));
        drop(a);
        let lines = read_lines(&path, 5);
        assert_eq!(lines[3]["event"], "start");
        assert_eq!(lines[3]["seq"], 4);
        assert_eq!(lines[4]["seq"], 5);
        let other = Audit::open(&dir.path().join("b.jsonl"), true).unwrap();
        assert_ne!(other.user(Some("alice")), alice);
        assert_eq!(
            Audit::open(&dir.path().join("c.jsonl"), false)
                .unwrap()
                .user(Some("alice")),
            json!("alice")
        );
    }

    #[test]
    fn a_log_whose_tail_cannot_be_read_is_refused_not_restarted_at_one() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            Audit::open(&path, false).map(drop)
        };
        // A torn last line (a crash mid-write) is skipped: the sequence goes on from 7.
        assert!(open(
            "torn.jsonl",
            "{\"seq\":7,\"event\":\"admit\"}\n{\"seq\":8,\"ev"
        )
        .is_ok());
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let t = std::fs::read_to_string(dir.path().join("torn.jsonl")).unwrap();
            if t.lines().count() >= 3 || Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // The torn line stays as it was; the start line is a line of its own, numbered on.
        let start: Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
        assert_eq!(start["event"], "start");
        assert_eq!(start["seq"], 8);
        for (name, text) in [
            ("garbage.jsonl", "{\"seq\":7}\nnot json\n"),
            ("noseq.jsonl", "{\"seq\":7}\n{\"event\":\"admit\"}\n"),
            ("badseq.jsonl", "{\"seq\":\"seven\"}\n"),
            ("nothing.jsonl", "half a line"),
        ] {
            let err = open(name, text)
                .err()
                .unwrap_or_else(|| panic!("{name} opened"));
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn line_events_name_the_ticket_not_the_cookie_and_the_wait_of_an_admission() {
        use crate::domain::{PoolKey, SeatId, TicketKey, TicketState};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = Audit::open(&path, false).unwrap();
        let pool = PoolKey::new("crm", "default");
        let mut t = Ticket {
            id: SeatId(0xab),
            key: TicketKey::new(&pool, "cookie-value"),
            pool,
            user: Some("Ann <b>".into()),
            client: "web".into(),
            joined_at: 1_000,
            last_poll: 1_000,
            state: TicketState::Waiting,
            ready_until: None,
            position: 3,
        };
        a.queue_event(&t, QueueEvent::Joined, 1_000);
        t.state = TicketState::Ready;
        t.ready_until = Some(70_000);
        a.queue_event(&t, QueueEvent::Ready, 10_000);
        a.queue_event(&t, QueueEvent::Left(QueueResult::Admitted), 13_500);
        a.queue_event(&t, QueueEvent::Left(QueueResult::LineFull), 14_000);
        drop(a);
        let lines = read_lines(&path, 5);
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events,
            [
                "start",
                "queue_join",
                "queue_ready",
                "queue_leave",
                "queue_leave"
            ]
        );
        let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        for l in &lines[1..] {
            assert_eq!(l["ticket"], "00000000000000ab");
            assert_eq!(
                (&l["product"], &l["pool"], &l["user"], &l["client"]),
                (
                    &json!("crm"),
                    &json!("default"),
                    &json!("Ann <b>"),
                    &json!("web")
                )
            );
            assert!(!l.to_string().contains("cookie-value"));
        }
        assert_eq!(lines[1]["position"], 3);
        assert_eq!(lines[2]["ready_until"], "1970-01-01T00:01:10.000Z");
        assert_eq!(lines[3]["result"], "admitted");
        assert_eq!(lines[3]["wait_seconds"], 12.5);
        assert_eq!(lines[4]["result"], "full");
        assert!(lines[4].get("wait_seconds").is_none());

        // With `hash_users` the user as typed is hashed like any other user.
        let hashed = Audit::open(&dir.path().join("h.jsonl"), true).unwrap();
        let f = hashed.ticket_fields(&t);
        assert!(f["user"].as_str().unwrap().starts_with("hmac:"));
    }

    #[test]
    fn a_bad_key_file_is_an_error_not_a_silent_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(dir.path().join("audit.jsonl.key"), "nope").unwrap();
        let err = Audit::open(&path, true).err().unwrap();
        assert!(err.contains("64-hex-digit"), "{err}");
    }

    #[test]
    fn clock_jumps_are_measured_against_monotonic_time() {
        let mut c = (Instant::now(), SystemTime::now());
        assert_eq!(check_clock(&mut c), None);
        c.1 -= std::time::Duration::from_secs(10);
        let skew = check_clock(&mut c).unwrap();
        assert!((9_000..=11_000).contains(&skew), "{skew}");
        assert_eq!(check_clock(&mut c), None);
    }

    #[test]
    fn concurrent_writers_keep_file_order_equal_to_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = std::sync::Arc::new(Audit::open(&path, false).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        a.record("admit", json!({}));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(a);
        let lines = read_lines(&path, 801);
        let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=801).collect::<Vec<_>>());
    }
}
