//! Append-only audit log: one JSON object per line, UTC time, a monotonic sequence number.
//!
//! Lines are written by one thread so callers never block on disk. Wall-clock jumps (NTP steps,
//! VM resumes) are detected against the monotonic clock and recorded, because every timeout
//! decision depends on wall time and an auditor must be able to see when it jumped.

use crate::ledger::{LedgerObserver, ReleaseReason, SeatRecord};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Instant, SystemTime};

const JUMP_TOLERANCE_MS: i64 = 2_000;

pub struct Audit {
    tx: Option<Mutex<mpsc::Sender<String>>>,
    seq: AtomicU64,
    hash_users: bool,
    clock: Mutex<(Instant, SystemTime)>,
}

impl Audit {
    /// An audit log that drops everything (no `audit:` in the config).
    pub fn disabled() -> Self {
        Audit { tx: None, seq: AtomicU64::new(0), hash_users: false, clock: Mutex::new((Instant::now(), SystemTime::now())) }
    }

    pub fn open(path: &Path, hash_users: bool) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
        Ok(Audit {
            tx: Some(Mutex::new(tx)),
            seq: AtomicU64::new(0),
            hash_users,
            clock: Mutex::new((Instant::now(), SystemTime::now())),
        })
    }

    pub fn user(&self, user: Option<&str>) -> Value {
        match user {
            None => Value::Null,
            Some(u) if self.hash_users => {
                let d = Sha256::digest(u.as_bytes());
                Value::String(format!("sha256:{}", d[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()))
            }
            Some(u) => Value::String(u.to_string()),
        }
    }

    /// Records `event` with `fields` (an object); adds `ts`, `seq` and `event`.
    pub fn record(&self, event: &str, fields: Value) {
        let Some(tx) = &self.tx else { return };
        self.check_clock();
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("seq".into(), json!(self.seq.fetch_add(1, Ordering::SeqCst) + 1));
        obj.insert("ts".into(), json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string()));
        obj.insert("event".into(), json!(event));
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(line);
    }

    fn check_clock(&self) {
        let jump = {
            let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            let (now_i, now_w) = (Instant::now(), SystemTime::now());
            let mono = now_i.duration_since(c.0).as_millis() as i64;
            let wall = match now_w.duration_since(c.1) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            };
            *c = (now_i, now_w);
            let skew = wall - mono;
            (skew.abs() > JUMP_TOLERANCE_MS).then_some(skew)
        };
        if let (Some(skew), Some(tx)) = (jump, &self.tx) {
            let line = json!({
                "seq": self.seq.fetch_add(1, Ordering::SeqCst) + 1,
                "ts": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "event": "clock_jump",
                "skew_ms": skew,
            });
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(format!("{line}\n"));
        }
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

impl LedgerObserver for Audit {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason) {
        let mut f = self.seat_fields(seat);
        f["reason"] = json!(reason.as_str());
        if let Some(by) = &seat.ended_by {
            f["by"] = json!(by);
        }
        let event = if reason == ReleaseReason::Paused { "pause" } else { "release" };
        self.record(event, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_lines_with_sequence_and_hashes_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let a = Audit::open(&path, true).unwrap();
        a.record("admit", json!({"user": a.user(Some("alice"))}));
        a.record("deny", json!({}));
        drop(a);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if t.lines().count() >= 2 || Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[1]["seq"], 2);
        assert_eq!(lines[0]["event"], "admit");
        assert!(lines[0]["user"].as_str().unwrap().starts_with("sha256:"));
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }
}
